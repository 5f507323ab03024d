"""Write reading batches to TimescaleDB: binary COPY, idempotent, rollups in the same commit.

One `ReadingStore` owns one connection (a `DbSession`) and writes one batch per transaction:

1. Rows are sorted by (sensor_id, ts) and repeats inside the batch dropped (the first one
   received wins), then the batch goes in with one binary COPY.
2. If the COPY hits the unique key (the batch holds a redelivery), the transaction is rolled
   back and that batch alone goes again through a temporary staging table and
   `INSERT ... ON CONFLICT DO NOTHING RETURNING`, which tells which rows were new.
3. The rows actually inserted are aggregated per (sensor, minute) with numpy and merged into
   `readings_1m`, and each sensor's newest reading into `latest` (one upsert statement).
4. The optional hook runs inside the same transaction with the inserted rows (the alarm
   engine writes its transitions there) and may return a callback to run after the commit.

While the database is unreachable the transaction is retried with backoff (the hook is called
again on each attempt); the caller's acknowledgements wait for `write` to return.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from hazwatch.domain import ReadingBatch
from ingest.dbsession import DbSession
from ingest.pgcopy import COLUMNS, readings_copy_payload
from ingest.rollup import first_of_each_key, latest_per_sensor, minute_aggregates, sort_by_key

AfterCommit = Callable[[], None]
TxHook = Callable[[asyncpg.Connection, ReadingBatch], Awaitable[AfterCommit | None]]
TxWork = Callable[[asyncpg.Connection], Awaitable[AfterCommit | None]]

_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_staging"
    " (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)

_INSERT_FROM_STAGING = """
INSERT INTO readings (sensor_id, ts, value, quality)
SELECT sensor_id, ts, value, quality FROM readings_staging
ON CONFLICT DO NOTHING
RETURNING sensor_id, (extract(epoch FROM ts) * 1000000)::bigint AS ts_us
"""

# One statement, one round trip: the per-minute aggregates merge into readings_1m and each
# sensor's newest reading into latest (a data-modifying WITH runs whether or not it is read).
# Microsecond epoch integers become timestamps exactly: 'epoch' + n * 1 us. NaN stands for NULL.
_MERGE_ROLLUPS = """
WITH minutes AS (
    INSERT INTO readings_1m AS r
        (sensor_id, bucket, min, max, sum, count, bad_count, last_ts, last)
    SELECT s, timestamptz 'epoch' + b * interval '1 microsecond',
           NULLIF(mn, 'NaN'), NULLIF(mx, 'NaN'), sm, c, bc,
           timestamptz 'epoch' + lt * interval '1 microsecond', NULLIF(l, 'NaN')
    FROM unnest($1::int[], $2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::int[],
                $7::int[], $8::bigint[], $9::float8[]) AS t(s, b, mn, mx, sm, c, bc, lt, l)
    ON CONFLICT (sensor_id, bucket) DO UPDATE SET
        min = LEAST(r.min, EXCLUDED.min),
        max = GREATEST(r.max, EXCLUDED.max),
        sum = r.sum + EXCLUDED.sum,
        count = r.count + EXCLUDED.count,
        bad_count = r.bad_count + EXCLUDED.bad_count,
        last = CASE WHEN EXCLUDED.last_ts > r.last_ts THEN EXCLUDED.last ELSE r.last END,
        last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)
)
INSERT INTO latest AS l (sensor_id, ts, value, quality)
SELECT s, timestamptz 'epoch' + t * interval '1 microsecond', NULLIF(v, 'NaN'), q
FROM unnest($10::int[], $11::bigint[], $12::float8[], $13::smallint[]) AS x(s, t, v, q)
ON CONFLICT (sensor_id) DO UPDATE SET
    ts = EXCLUDED.ts, value = EXCLUDED.value, quality = EXCLUDED.quality
WHERE EXCLUDED.ts > l.ts
"""


class _Clash(Exception):
    """The COPY hit the unique key: the batch holds readings that are already stored."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    inserted: int  # new rows in `readings`
    duplicates: int  # rows already stored, or repeated inside the batch
    latency_s: float  # from the call to the commit, retries included
    attempts: int  # transactions tried (1 unless the database failed meanwhile)


def unique_sorted(batch: ReadingBatch) -> ReadingBatch:
    """The batch sorted by (sensor_id, ts) with repeated keys dropped (the first one wins)."""
    if len(batch) <= 1:
        return batch
    ordered = batch.take(sort_by_key(batch))
    keep = first_of_each_key(ordered)
    return ordered if bool(keep.all()) else ordered.take(keep)


class ReadingStore:
    """The single writer of `readings`, `readings_1m` and `latest` in an ingest process."""

    def __init__(
        self,
        session: DbSession,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._session = session
        self._clock = clock

    @staticmethod
    async def prepare(conn: asyncpg.Connection) -> None:
        """Per-connection set-up; pass as the DbSession's `on_connect`."""
        await conn.execute(_STAGING_DDL)

    async def write(self, batch: ReadingBatch, hook: TxHook | None = None) -> StoreResult:
        """Store a batch (idempotently) and return once it is committed."""
        started = self._clock()
        unique = unique_sorted(batch)
        if len(unique) == 0 and hook is None:
            return StoreResult(0, len(batch), self._clock() - started, 0)
        payload = readings_copy_payload(unique)
        attempts = 0
        redelivery = False

        async def work(conn: asyncpg.Connection) -> tuple[int, AfterCommit | None]:
            nonlocal attempts
            attempts += 1
            if redelivery:
                inserted = await self._insert_new_only(conn, unique, payload)
            else:
                await self._copy(conn, unique, payload)
                inserted = unique
            await self._merge_rollups(conn, inserted)
            after = await hook(conn, inserted) if hook is not None else None
            return len(inserted), after

        try:
            inserted, after = await self._session.transact(work)
        except _Clash:
            # The batch holds readings already stored: this batch alone goes the slow way.
            redelivery = True
            inserted, after = await self._session.transact(work)
        if after is not None:
            after()
        return StoreResult(
            inserted=inserted,
            duplicates=len(batch) - inserted,
            latency_s=self._clock() - started,
            attempts=attempts,
        )

    async def transact(self, work: TxWork) -> None:
        """Run other work (the alarm engine's timer) on this connection in its own transaction."""
        after = await self._session.transact(work)
        if after is not None:
            after()

    async def close(self) -> None:
        await self._session.close()

    @staticmethod
    async def _copy(conn: asyncpg.Connection, batch: ReadingBatch, payload: bytes) -> None:
        if len(batch) == 0:
            return
        try:
            await conn.copy_to_table(
                "readings", source=memoryview(payload), columns=COLUMNS, format="binary"
            )
        except asyncpg.UniqueViolationError as exc:
            raise _Clash from exc

    @staticmethod
    async def _insert_new_only(
        conn: asyncpg.Connection, batch: ReadingBatch, payload: bytes
    ) -> ReadingBatch:
        if len(batch) == 0:
            return batch
        await conn.copy_to_table(
            "readings_staging", source=memoryview(payload), columns=COLUMNS, format="binary"
        )
        rows = await conn.fetch(_INSERT_FROM_STAGING)  # staging empties itself at commit
        if len(rows) == len(batch):
            return batch
        new = {(r["sensor_id"], r["ts_us"]) for r in rows}
        mask = np.fromiter(
            (
                key in new
                for key in zip(batch.sensor_id.tolist(), batch.ts_us.tolist(), strict=True)
            ),
            dtype=np.bool_,
            count=len(batch),
        )
        return batch.take(mask)

    @staticmethod
    async def _merge_rollups(conn: asyncpg.Connection, batch: ReadingBatch) -> None:
        if len(batch) == 0:
            return
        agg = minute_aggregates(batch)
        newest = latest_per_sensor(batch)
        await conn.execute(
            _MERGE_ROLLUPS,
            agg.sensor_id.tolist(),
            agg.bucket_us.tolist(),
            agg.min.tolist(),
            agg.max.tolist(),
            agg.sum.tolist(),
            agg.count.tolist(),
            agg.bad_count.tolist(),
            agg.last_ts_us.tolist(),
            agg.last.tolist(),
            batch.sensor_id[newest].tolist(),
            batch.ts_us[newest].tolist(),
            batch.value[newest].tolist(),
            batch.quality[newest].tolist(),
        )
