"""A flood: 10k CO detectors cross red in one batch, then clear. Every event is persisted and
notified; the engine keeps up (its speed is measured by bench.engine, not here)."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from alerting.service import AlarmService
from hazwatch.domain import ReadingBatch
from hazwatch.registry.snapshot import RegistrySnapshot
from tests.alarm_harness import T0, S, ingest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 10_000


async def _city(db: asyncpg.Connection) -> None:
    await db.execute(
        """INSERT INTO sites (key, name) VALUES ('flood', 'Flood site');
           INSERT INTO assets (site_id, key, kind, name)
               SELECT 1, 'room-' || g, 'building', 'Room ' || g FROM generate_series(1, 100) g;
           INSERT INTO devices (site_id, key, name, protocol)
               SELECT 1, 'det-' || g, 'Detector ' || g, 'mqtt' FROM generate_series(1, 100) g;"""
    )
    await db.execute(
        """INSERT INTO sensors (key, device_id, asset_id, channel, kind, unit, name, range_min,
                               range_max, period_s)
           SELECT 'det-' || d || '/co' || c, d, d, 'co' || c, 'co', 'ppm', 'CO', 0, 1000, 10
           FROM generate_series(1, 100) d, generate_series(1, $1::int / 100) c""",
        N,
    )


async def test_ten_thousand_sensors_cross_at_once(db: asyncpg.Connection, db_url: str) -> None:
    await _city(db)
    snapshot = await RegistrySnapshot.load(db)
    assert len(snapshot.sensors) == N
    service = await AlarmService.start(db, snapshot, now_us=T0)
    ids = np.array([s.sensor_id for s in snapshot.sensors], dtype=np.int32)
    heard = 0
    all_heard = asyncio.Event()

    def hear(*_args: object) -> None:
        nonlocal heard
        heard += 1
        if heard == 2 * N:
            all_heard.set()

    listener = await asyncpg.connect(db_url)
    await listener.add_listener("hazwatch_alarm_events", hear)
    try:
        red = ReadingBatch.from_columns(ids, np.full(N, T0 + 5 * S), np.full(N, 200.0),
                                        np.zeros(N))  # fmt: skip
        assert await ingest(db, service, red) == N
        # Back to normal for the five-minute release dwell: 31 readings each, one batch.
        times = T0 + np.arange(10, 320, 10) * S
        calm = ReadingBatch.from_columns(np.tile(ids, len(times)), np.repeat(times, N),
                                         np.full(N * len(times), 2.0),
                                         np.zeros(N * len(times)))  # fmt: skip
        assert await ingest(db, service, calm) == N * len(times)
        await asyncio.wait_for(all_heard.wait(), timeout=30)
    finally:
        await listener.close()
    counts = await db.fetch(
        "SELECT kind, tier, count(*) AS n FROM alarm_events GROUP BY kind, tier ORDER BY kind"
    )
    assert [(r["kind"], r["tier"], r["n"]) for r in counts] == [
        ("cleared", 0, N),
        ("raised", 4, N),
    ]
    assert await db.fetchval("SELECT count(*) FROM alarms WHERE state = 'cleared_unacked'") == N
    assert heard == 2 * N
    assert service.counters.events == 2 * N
