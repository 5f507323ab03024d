"""ReadingStore on the real TimescaleDB: exact round trip, idempotence, rollups, hook, retries."""

from __future__ import annotations

import math

import asyncpg
import numpy as np
import pytest

from hazwatch.config import DatabaseSettings
from hazwatch.domain import Quality, ReadingBatch
from ingest.dbsession import Backoff, DbSession
from ingest.store import ReadingStore

T0 = 1_764_300_000_000_000  # 2025-11-28T03:20:00Z in microseconds, a whole minute
MIN = 60_000_000


def make_store(settings: DatabaseSettings) -> ReadingStore:
    session = DbSession(
        settings, name="test-store", backoff=Backoff(0.01, 0.05), on_connect=ReadingStore.prepare
    )
    return ReadingStore(session)


async def readings(db: asyncpg.Connection) -> list[tuple[int, int, float | None, int]]:
    rows = await db.fetch(
        """SELECT sensor_id, (extract(epoch FROM ts) * 1000000)::bigint AS ts_us, value, quality
           FROM readings ORDER BY sensor_id, ts"""
    )
    return [(r["sensor_id"], r["ts_us"], r["value"], r["quality"]) for r in rows]


async def test_binary_copy_round_trips_exactly(db_settings: DatabaseSettings, db) -> None:
    values = [0.0, -1.5, 1e-300, 1.7976931348623157e308, math.nan, 123.456789012345, -0.0]
    batch = ReadingBatch.from_columns(
        sensor_id=[1, 2, 3, 2_147_483_647, 5, 6, 7],
        ts_us=[T0 + 1, T0 + 999_999, T0 - 1, T0 + 123_456_789, T0, 0, 4_102_444_800_000_000],
        value=values,
        quality=[0, 16, 64, 32767, int(Quality.COMM_TIMEOUT), 0, 0],
    )
    store = make_store(db_settings)
    result = await store.write(batch)
    await store.close()
    assert (result.inserted, result.duplicates, result.attempts) == (7, 0, 1)
    got = await readings(db)
    expected = sorted(
        (int(s), int(t), None if math.isnan(v) else v, int(q))
        for s, t, v, q in zip(batch.sensor_id, batch.ts_us, values, batch.quality, strict=True)
    )
    assert got == expected
    # -0.0 and 0.0 compare equal: check the sign bit went through too.
    neg_zero = await db.fetchval("SELECT value FROM readings WHERE sensor_id = 7")
    assert math.copysign(1, neg_zero) == -1


async def test_redelivered_batch_inserts_only_new_rows(db_settings, db) -> None:
    store = make_store(db_settings)
    first = ReadingBatch.from_columns([1, 1, 2], [T0, T0 + 1, T0], [1.0, 2.0, 3.0], [0, 0, 0])
    await store.write(first)
    # Same keys again (different values: the first stored wins), one new row, one repeat
    # inside the batch.
    second = ReadingBatch.from_columns(
        [1, 2, 2, 3, 3], [T0, T0, T0, T0, T0], [9.0, 9.0, 9.0, 4.0, 5.0], [0, 0, 0, 0, 0]
    )
    result = await store.write(second)
    await store.close()
    assert (result.inserted, result.duplicates) == (1, 4)
    assert await readings(db) == [
        (1, T0, 1.0, 0),
        (1, T0 + 1, 2.0, 0),
        (2, T0, 3.0, 0),
        (3, T0, 4.0, 0),
    ]


async def test_rollup_is_exact_under_duplicates_and_any_order(db_settings, db) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    sensor = rng.integers(1, 6, n)
    ts = T0 + rng.integers(0, 5 * MIN, n)
    value = rng.normal(50, 10, n)
    value[rng.random(n) < 0.05] = np.nan
    quality = np.where(rng.random(n) < 0.1, int(Quality.SENSOR_FAULT), 0)
    quality[np.isnan(value)] = int(Quality.COMM_TIMEOUT)
    batch = ReadingBatch.from_columns(sensor, ts, value, quality)

    store = make_store(db_settings)
    # Deliver in shuffled slices, each slice twice, some overlapping.
    order = rng.permutation(n)
    for start in range(0, n, 400):
        piece = batch.take(order[start : start + 700])
        await store.write(piece)
        await store.write(piece)
    await store.close()

    expected = await db.fetch(
        """SELECT sensor_id, time_bucket('1 minute', ts) AS bucket,
                  min(value) FILTER (WHERE quality < 64) AS min,
                  max(value) FILTER (WHERE quality < 64) AS max,
                  coalesce(sum(value) FILTER (WHERE quality < 64), 0) AS sum,
                  count(value) FILTER (WHERE quality < 64) AS count,
                  count(*) FILTER (WHERE quality >= 64) AS bad_count,
                  max(ts) AS last_ts,
                  (array_agg(value ORDER BY ts DESC))[1] AS last
           FROM readings GROUP BY 1, 2 ORDER BY 1, 2"""
    )
    got = await db.fetch(
        "SELECT sensor_id, bucket, min, max, sum, count, bad_count, last_ts, last"
        " FROM readings_1m ORDER BY 1, 2"
    )
    assert await db.fetchval("SELECT count(*) FROM readings") == len(
        {(int(s), int(t)) for s, t in zip(sensor, ts, strict=True)}
    )
    assert len(got) == len(expected) > 20
    for g, e in zip(got, expected, strict=True):
        assert (g["sensor_id"], g["bucket"], g["count"], g["bad_count"], g["last_ts"]) == (
            e["sensor_id"],
            e["bucket"],
            e["count"],
            e["bad_count"],
            e["last_ts"],
        )
        assert g["min"] == e["min"]
        assert g["max"] == e["max"]
        assert g["last"] == e["last"]
        assert g["sum"] == pytest.approx(e["sum"], rel=1e-12)

    latest = await db.fetch("SELECT sensor_id, ts, value, quality FROM latest ORDER BY 1")
    newest = await db.fetch(
        """SELECT DISTINCT ON (sensor_id) sensor_id, ts, value, quality
           FROM readings ORDER BY sensor_id, ts DESC"""
    )
    assert [tuple(r) for r in latest] == [tuple(r) for r in newest]


async def test_hook_sees_inserted_rows_in_the_transaction(db_settings, db) -> None:
    store = make_store(db_settings)
    await store.write(ReadingBatch.from_columns([1], [T0], [1.0], [0]))
    seen: list[list[tuple[int, int]]] = []
    committed: list[int] = []

    async def hook(conn: asyncpg.Connection, inserted: ReadingBatch):
        seen.append(list(zip(inserted.sensor_id.tolist(), inserted.ts_us.tolist(), strict=True)))
        # Inside the transaction: the rows are visible to this connection only.
        n = await conn.fetchval("SELECT count(*) FROM readings")
        return lambda: committed.append(n)

    batch = ReadingBatch.from_columns([1, 2, 1], [T0, T0, T0 + 5], [1.0, 2.0, 3.0], [0, 0, 0])
    result = await store.write(batch, hook)
    await store.close()
    assert seen == [[(1, T0 + 5), (2, T0)]]
    assert committed == [3]
    assert (result.inserted, result.duplicates) == (2, 1)


async def test_failed_hook_rolls_back_everything(db_settings, db) -> None:
    store = make_store(db_settings)

    async def hook(conn: asyncpg.Connection, inserted: ReadingBatch):
        raise ZeroDivisionError("engine bug")

    with pytest.raises(ZeroDivisionError):
        await store.write(ReadingBatch.from_columns([1], [T0], [1.0], [0]), hook)
    await store.close()
    assert await db.fetchval("SELECT count(*) FROM readings") == 0
    assert await db.fetchval("SELECT count(*) FROM readings_1m") == 0
