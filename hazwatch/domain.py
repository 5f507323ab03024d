"""The shared vocabulary: alarm tiers, reading quality codes and the column batch of readings.

Every stage hands readings to the next as a `ReadingBatch`: four numpy columns of equal length.
Timestamps are integer microseconds since the Unix epoch (UTC), the resolution PostgreSQL
stores, so a reading's time never goes through a float on its way to the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

import numpy as np
import numpy.typing as npt

SENSOR_ID_DTYPE = np.int32
TS_DTYPE = np.int64
VALUE_DTYPE = np.float64
QUALITY_DTYPE = np.int16

US_PER_S = 1_000_000
US_PER_MS = 1_000


class Tier(IntEnum):
    """Four-colour warning tier; 4 red is the most severe (Chinese warning level I)."""

    NORMAL = 0
    BLUE = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4

    @property
    def colour(self) -> str:
        return self.name.lower()


class Quality(IntEnum):
    """Per-reading quality code, stored in `readings.quality`.

    0-63 are usable values (alarms are evaluated on them); 64 and above are bad: the value is
    missing or not to be trusted, and the bad-quality rule alarms on them. Codes 80-95 carry a
    Modbus exception code (80 + code) so an engineer can see what the device answered.
    """

    GOOD = 0
    # Usable but flagged: a value substituted or taken during calibration is kept out of alarms.
    UNCERTAIN = 16
    CALIBRATION = 17
    # Bad: the detector says it is faulty, or the collector could not read it.
    BAD = 64
    SENSOR_FAULT = 65
    COMM_TIMEOUT = 66
    COMM_REFUSED = 67
    PROTOCOL_ERROR = 68
    MODBUS_EXCEPTION = 80

    @staticmethod
    def is_bad(code: int) -> bool:
        return code >= Quality.BAD

    @staticmethod
    def modbus_exception(exception_code: int) -> int:
        """Quality code carrying a Modbus exception code (1-15)."""
        return int(Quality.MODBUS_EXCEPTION) + (exception_code & 0x0F)


BAD_QUALITY_MIN = int(Quality.BAD)


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings as equal-length numpy columns, in no particular order."""

    sensor_id: npt.NDArray[np.int32]
    ts_us: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int16]

    def __post_init__(self) -> None:
        n = len(self.sensor_id)
        if not (len(self.ts_us) == len(self.value) == len(self.quality) == n):
            raise ValueError("ReadingBatch columns must have equal lengths")

    @classmethod
    def empty(cls) -> Self:
        return cls.from_columns([], [], [], [])

    @classmethod
    def from_columns(
        cls,
        sensor_id: npt.ArrayLike,
        ts_us: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike,
    ) -> Self:
        return cls(
            sensor_id=np.asarray(sensor_id, dtype=SENSOR_ID_DTYPE),
            ts_us=np.asarray(ts_us, dtype=TS_DTYPE),
            value=np.asarray(value, dtype=VALUE_DTYPE),
            quality=np.asarray(quality, dtype=QUALITY_DTYPE),
        )

    @classmethod
    def concat(cls, batches: list[ReadingBatch]) -> Self:
        if not batches:
            return cls.empty()
        return cls(
            sensor_id=np.concatenate([b.sensor_id for b in batches]),
            ts_us=np.concatenate([b.ts_us for b in batches]),
            value=np.concatenate([b.value for b in batches]),
            quality=np.concatenate([b.quality for b in batches]),
        )

    def __len__(self) -> int:
        return len(self.sensor_id)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> ReadingBatch:
        """The rows selected by an index or mask, as a new batch."""
        return ReadingBatch(
            sensor_id=self.sensor_id[index],
            ts_us=self.ts_us[index],
            value=self.value[index],
            quality=self.quality[index],
        )
