"""Per-(sensor, minute) aggregates and per-sensor latest readings of a batch, with numpy.

Pure: a batch in, column arrays out. `ingest.store` merges them into `readings_1m` and `latest`
with one upsert each. The batch must hold only rows that were actually inserted (no row twice,
none already in the table), so merging is exact: min/max/sum/count/bad_count add up in any
order, and `last` keeps the reading with the latest timestamp, whatever order batches arrive in.

`count`, `sum`, `min` and `max` cover usable readings only (a value, quality below 64): a bad
reading's value is not to be trusted, so it would distort the trend. `bad_count` counts readings
with bad quality. `last`/`last_ts` is the latest reading of the minute whatever its quality, with
its value (NULL if it had none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hazwatch.domain import BAD_QUALITY_MIN, ReadingBatch

US_PER_MINUTE = 60_000_000


@dataclass(frozen=True, slots=True)
class MinuteAggregates:
    """One row per (sensor, minute); NaN stands for NULL in min, max and last."""

    sensor_id: npt.NDArray[np.int32]
    bucket_us: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    bad_count: npt.NDArray[np.int64]
    last_ts_us: npt.NDArray[np.int64]
    last: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.sensor_id)


def sort_by_key(batch: ReadingBatch) -> npt.NDArray[np.intp]:
    """A stable ordering of the rows by (sensor_id, ts): equal keys keep their arrival order."""
    return np.lexsort((batch.ts_us, batch.sensor_id))


def first_of_each_key(batch: ReadingBatch) -> npt.NDArray[np.bool_]:
    """For a batch sorted by (sensor_id, ts): True on the first row of each key."""
    keep = np.ones(len(batch), dtype=np.bool_)
    if len(batch) > 1:
        keep[1:] = (batch.sensor_id[1:] != batch.sensor_id[:-1]) | (
            batch.ts_us[1:] != batch.ts_us[:-1]
        )
    return keep


def minute_aggregates(batch: ReadingBatch) -> MinuteAggregates:
    """Aggregate a batch sorted by (sensor_id, ts) per sensor and minute."""
    n = len(batch)
    bucket = batch.ts_us - np.mod(batch.ts_us, US_PER_MINUTE)
    change = np.ones(n, dtype=np.bool_)
    if n > 1:
        change[1:] = (batch.sensor_id[1:] != batch.sensor_id[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n).astype(np.intp) - 1
    if n == 0:
        return MinuteAggregates(
            sensor_id=batch.sensor_id,
            bucket_us=bucket,
            min=batch.value,
            max=batch.value,
            sum=batch.value,
            count=np.zeros(0, dtype=np.int64),
            bad_count=np.zeros(0, dtype=np.int64),
            last_ts_us=batch.ts_us,
            last=batch.value,
        )
    bad = batch.quality >= BAD_QUALITY_MIN
    usable = ~bad & ~np.isnan(batch.value)
    masked = np.where(usable, batch.value, np.nan)
    return MinuteAggregates(
        sensor_id=batch.sensor_id[starts],
        bucket_us=bucket[starts],
        # fmin/fmax skip NaN; a minute without a usable value stays NaN (NULL).
        min=np.fmin.reduceat(masked, starts),
        max=np.fmax.reduceat(masked, starts),
        sum=np.add.reduceat(np.where(usable, batch.value, 0.0), starts),
        count=np.add.reduceat(usable.astype(np.int64), starts),
        bad_count=np.add.reduceat(bad.astype(np.int64), starts),
        last_ts_us=batch.ts_us[ends],
        last=batch.value[ends],
    )


def latest_per_sensor(batch: ReadingBatch) -> npt.NDArray[np.intp]:
    """For a batch sorted by (sensor_id, ts): the index of each sensor's newest row."""
    n = len(batch)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = batch.sensor_id[1:] != batch.sensor_id[:-1]
    return np.flatnonzero(last)
