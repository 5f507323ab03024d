"""The pure pieces of the store: the binary COPY payload and the per-minute aggregates."""

from __future__ import annotations

import math
import struct

from hazwatch.domain import Quality, ReadingBatch
from ingest.pgcopy import HEADER, PG_EPOCH_OFFSET_US, TRAILER, readings_copy_payload
from ingest.rollup import first_of_each_key, latest_per_sensor, minute_aggregates, sort_by_key
from ingest.store import unique_sorted

MIN = 60_000_000
T0 = 1_764_300_000_000_000  # a whole minute


def test_copy_payload_layout() -> None:
    batch = ReadingBatch.from_columns([7, 8], [T0, T0 + 1], [1.5, math.nan], [0, 66])
    payload = readings_copy_payload(batch)
    assert payload.startswith(HEADER)
    assert payload.endswith(TRAILER)
    body = payload[len(HEADER) : -len(TRAILER)]
    # A row with a value: 4 fields, int4, timestamptz, float8, int2.
    with_value = struct.pack(">hiiiqidih", 4, 4, 7, 8, T0 - PG_EPOCH_OFFSET_US, 8, 1.5, 2, 0)
    # A row without: the value's length is -1 and no bytes follow.
    without = struct.pack(">hiiiqiih", 4, 4, 8, 8, T0 + 1 - PG_EPOCH_OFFSET_US, -1, 2, 66)
    assert body == with_value + without


def test_unique_sorted_keeps_the_first_of_each_key() -> None:
    batch = ReadingBatch.from_columns(
        [2, 1, 2, 1, 2], [T0, T0, T0, T0 + 1, T0 - 1], [1.0, 2.0, 3.0, 4.0, 5.0], [0] * 5
    )
    out = unique_sorted(batch)
    assert list(
        zip(out.sensor_id.tolist(), out.ts_us.tolist(), out.value.tolist(), strict=True)
    ) == [
        (1, T0, 2.0),
        (1, T0 + 1, 4.0),
        (2, T0 - 1, 5.0),
        (2, T0, 1.0),  # the first of the two (2, T0) rows received
    ]


def test_minute_aggregates_by_hand() -> None:
    bad = int(Quality.SENSOR_FAULT)
    batch = ReadingBatch.from_columns(
        sensor_id=[1, 1, 1, 1, 1, 2, 2],
        ts_us=[T0 + 5, T0 + 1, T0 + 30_000_000, T0 + MIN, T0 + 59_999_999, T0, T0 + 10],
        value=[3.0, 1.0, 99.0, 7.0, math.nan, 4.0, 6.0],
        quality=[0, 0, bad, 0, int(Quality.COMM_TIMEOUT), 0, 16],
    )
    batch = batch.take(sort_by_key(batch))
    agg = minute_aggregates(batch)
    rows = list(
        zip(
            agg.sensor_id.tolist(),
            ((agg.bucket_us - T0) // MIN).tolist(),
            agg.min.tolist(),
            agg.max.tolist(),
            agg.sum.tolist(),
            agg.count.tolist(),
            agg.bad_count.tolist(),
            (agg.last_ts_us - T0).tolist(),
            agg.last.tolist(),
            strict=True,
        )
    )
    # sensor 1, minute 0: usable 1.0 and 3.0; 99.0 is bad quality; the last reading has no value.
    assert rows[0][:7] == (1, 0, 1.0, 3.0, 4.0, 2, 2)
    assert rows[0][7] == 59_999_999
    assert math.isnan(rows[0][8])
    assert rows[1] == (1, 1, 7.0, 7.0, 7.0, 1, 0, MIN, 7.0)
    assert rows[2] == (2, 0, 4.0, 6.0, 10.0, 2, 0, 10, 6.0)
    assert latest_per_sensor(batch).tolist() == [4, 6]


def test_a_minute_without_usable_values_has_no_min_or_max() -> None:
    batch = ReadingBatch.from_columns([1], [T0], [math.nan], [int(Quality.COMM_TIMEOUT)])
    agg = minute_aggregates(batch)
    assert math.isnan(agg.min[0])
    assert math.isnan(agg.max[0])
    assert (agg.sum[0], agg.count[0], agg.bad_count[0]) == (0.0, 0, 1)


def test_empty_batch() -> None:
    empty = ReadingBatch.empty()
    assert len(minute_aggregates(empty)) == 0
    assert len(latest_per_sensor(empty)) == 0
    assert len(first_of_each_key(empty)) == 0
    assert readings_copy_payload(empty) == HEADER + TRAILER
    assert len(unique_sorted(ReadingBatch.from_columns([], [], [], []))) == 0
