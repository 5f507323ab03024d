"""What the ingest store does around the alarm hook, for tests: insert a batch of readings in
one transaction (duplicates dropped), hand the inserted rows to `AlarmService.on_batch` in the
same transaction, adopt the engine state after the commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from alerting.service import AlarmService
from hazwatch.domain import ReadingBatch

S = 1_000_000
T0 = 1_790_000_000 * S
EPOCH_T0 = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=T0)


async def insert_readings(conn: asyncpg.Connection, batch: ReadingBatch) -> ReadingBatch:
    """Insert, skipping (sensor, ts) already stored; the rows actually inserted."""
    if not len(batch):
        return batch
    rows = await conn.fetch(
        """INSERT INTO readings (sensor_id, ts, value, quality)
           SELECT s, hazwatch_us_to_ts(t), v, q
           FROM unnest($1::int[], $2::bigint[], $3::float8[], $4::int2[]) AS r(s, t, v, q)
           ON CONFLICT DO NOTHING
           RETURNING sensor_id, hazwatch_ts_to_us(ts) AS ts_us, value, quality""",
        batch.sensor_id.tolist(), batch.ts_us.tolist(),
        [None if np.isnan(v) else v for v in batch.value.tolist()], batch.quality.tolist(),
    )  # fmt: skip
    return ReadingBatch.from_columns(
        [r["sensor_id"] for r in rows],
        [r["ts_us"] for r in rows],
        [np.nan if r["value"] is None else r["value"] for r in rows],
        [r["quality"] for r in rows],
    )


async def ingest(conn: asyncpg.Connection, service: AlarmService, batch: ReadingBatch) -> int:
    """One batch, as ingest would write it; returns the rows inserted."""
    async with conn.transaction():
        inserted = await insert_readings(conn, batch)
        adopt = await service.on_batch(conn, inserted)
    adopt()
    return len(inserted)


async def tick(conn: asyncpg.Connection, service: AlarmService, now_us: int) -> None:
    async with conn.transaction():
        adopt = await service.tick(conn, now_us)
    adopt()


def readings(rows: list[tuple[int, float, float] | tuple[int, float, float, int]]) -> ReadingBatch:
    """(sensor_id, seconds after T0, value[, quality]) rows as a batch."""
    return ReadingBatch.from_columns(
        [r[0] for r in rows],
        [T0 + round(r[1] * S) for r in rows],
        [r[2] for r in rows],
        [r[3] if len(r) > 3 else 0 for r in rows],  # type: ignore[misc]
    )
