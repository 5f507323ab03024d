"""A deterministic alarm feed over the minimal registry, runnable as a process that can be
killed: `python -m tests.restart_feed DB_URL [--pause-at N]`.

Ten-second slices of readings (excursions through every CO tier, a level ramp that makes the
derived piston speed alarm, pressure dips, bad quality, a silent sensor, duplicates and late
readings), each followed by a tick. Each op runs in its own transaction, as ingest would run
it; the process prints `begin N` inside the transaction (pausing there when N is
`--pause-at`, so a kill lands mid-transaction) and `done N` after the commit. Replaying the
whole feed is idempotent: stored readings are not inserted again, so they are not evaluated
again.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from dataclasses import dataclass

import asyncpg

from alerting.service import AlarmService
from hazwatch.domain import ReadingBatch
from hazwatch.registry.snapshot import RegistrySnapshot
from tests.alarm_harness import T0, S, insert_readings

SLICES = 60
GRACE_S = 2


@dataclass(frozen=True)
class FeedOp:
    batch: ReadingBatch | None
    now_us: int | None


def feed(snapshot: RegistrySnapshot, seed: int = 5) -> list[FeedOp]:
    rng = random.Random(seed)

    def sid(key: str) -> int:
        info = snapshot.sensor(key)
        assert info is not None
        return info.sensor_id

    co = [sid("gh1-det/co1"), sid("gh1-det/co2"), sid("gh1-det/co3")]
    level, pressure = sid("gh1-plc/level"), sid("gh1-plc/pressure")
    ops: list[FeedOp] = []
    sent: list[tuple[int, int, float, int]] = []
    for k in range(SLICES):
        rows: list[tuple[int, int, float, int]] = []
        for t in range(k * 10, k * 10 + 10):
            for i, s in enumerate(co):
                if t % 5 != i or (s == co[2] and 200 <= t < 330):  # co3 silent for a while
                    continue
                peak = 190.0 * max(0.0, math.sin(math.pi * (t - 60 * i) / 240.0)) ** 2
                value = 3.0 + peak + rng.uniform(-3, 3)
                quality = 66 if rng.random() < 0.03 else 0
                rows.append((s, T0 + t * S, math.nan if quality else value, quality))
            if t % 2 == 0:
                ramp = 40.0 + (t - 300) / 2 if 300 <= t < 360 else 40.0
                rows.append((level, T0 + t * S, ramp + rng.uniform(-0.05, 0.05), 0))
            dip = 2.6 if 400 <= t < 460 else 3.0
            rows.append((pressure, T0 + t * S, dip + rng.uniform(-0.01, 0.01), 0))
        rng.shuffle(rows)
        if sent:
            rows += rng.sample(sent, min(5, len(sent)))  # redelivered: already stored
        sent += rows
        ops.append(FeedOp(ReadingBatch.from_columns(*zip(*rows, strict=True)), None))
        ops.append(FeedOp(None, T0 + (k * 10 + 10 + GRACE_S) * S))
    return ops


async def run_feed(
    conn: asyncpg.Connection, *, pause_at: int | None = None, report: bool = False
) -> None:
    snapshot = await RegistrySnapshot.load(conn)
    service = await AlarmService.start(conn, snapshot, now_us=T0, timer_grace_s=GRACE_S)
    for i, op in enumerate(feed(snapshot)):
        async with conn.transaction():
            if op.batch is not None:
                inserted = await insert_readings(conn, op.batch)
                adopt = await service.on_batch(conn, inserted)
            else:
                assert op.now_us is not None
                adopt = await service.tick(conn, op.now_us)
            if report:
                print(f"begin {i}", flush=True)
            if i == pause_at:
                await asyncio.sleep(30)  # the parent kills us here, mid-transaction
        adopt()
        if report:
            print(f"done {i}", flush=True)


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("--pause-at", type=int)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.db_url)
    try:
        await run_feed(conn, pause_at=args.pause_at, report=True)
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(_main())
