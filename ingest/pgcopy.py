"""PostgreSQL binary COPY payloads built from numpy columns, without a Python object per row.

The format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format") is a fixed
header, one tuple per row (an int16 field count, then per field an int32 byte length and the
big-endian value, or length -1 for NULL) and an int16 -1 trailer. A row of `readings` with a
value has a fixed size and so does a row without one, so each kind is one structured numpy
array; rows may be sent in any order, so the two arrays are simply concatenated.
"""

from __future__ import annotations

import numpy as np

from hazwatch.domain import ReadingBatch

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000

COLUMNS = ("sensor_id", "ts", "value", "quality")

_WITH_VALUE = np.dtype(
    [
        ("nfields", ">i2"),
        ("sensor_len", ">i4"),
        ("sensor_id", ">i4"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
        ("quality_len", ">i4"),
        ("quality", ">i2"),
    ]
)
_WITHOUT_VALUE = np.dtype(
    [
        ("nfields", ">i2"),
        ("sensor_len", ">i4"),
        ("sensor_id", ">i4"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),  # -1: NULL, no bytes follow
        ("quality_len", ">i4"),
        ("quality", ">i2"),
    ]
)


def readings_copy_payload(batch: ReadingBatch) -> bytes:
    """The binary COPY payload of `batch` for the columns (sensor_id, ts, value, quality).

    A NaN value is written as NULL: in a ReadingBatch NaN means "no value" (decode refuses
    real NaN readings before they get here).
    """
    has_value = ~np.isnan(batch.value)
    parts = [HEADER]
    for dtype, mask in ((_WITH_VALUE, has_value), (_WITHOUT_VALUE, ~has_value)):
        n = int(np.count_nonzero(mask))
        if n == 0:
            continue
        rows = np.empty(n, dtype=dtype)
        rows["nfields"] = 4
        rows["sensor_len"] = 4
        rows["sensor_id"] = batch.sensor_id[mask]
        rows["ts_len"] = 8
        rows["ts"] = batch.ts_us[mask] - PG_EPOCH_OFFSET_US
        if dtype is _WITH_VALUE:
            rows["value_len"] = 8
            rows["value"] = batch.value[mask]
        else:
            rows["value_len"] = -1
        rows["quality_len"] = 2
        rows["quality"] = batch.quality[mask]
        parts.append(rows.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)
