"""A device's messages that never reached the broker are reported (RELIABILITY.md R2)."""

from __future__ import annotations

import time

import asyncpg
from ingest_support import Env, load_registry, running, telemetry, wait_until

from bench.mqttload import publish


async def test_missing_message_numbers_are_reported_once(env: Env, db: asyncpg.Connection) -> None:
    await load_registry(db, {"north": 1})
    base = env.settings()
    settings = base.model_copy(
        update={"mqtt": base.mqtt.model_copy(update={"seq_gap_grace_s": 1.0})}
    )
    topic = env.topic("north", "north-d0")
    now = int(time.time() * 1000)
    # seq 0-9 arrive, 10-14 are lost upstream, 15-19 arrive, 12 turns up late.
    numbers = [*range(10), *range(15, 20), 12]
    messages = [(topic, telemetry(now + 10 * n, n, co1=1.0)) for n in numbers]
    async with running(settings) as run:
        report = await publish("127.0.0.1", env.broker.port, messages)
        assert report.acked_count == len(messages)

        async def reported() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM quarantine WHERE reason = 'seq_gap'")
            )

        await wait_until(reported, timeout_s=20, what="the gap report")
        rows = await db.fetch("SELECT detail, payload FROM quarantine WHERE reason = 'seq_gap'")
        # The late 12 split the gap in two; both halves are one report for the device.
        assert [r["detail"] for r in rows] == [
            "device north-d0: 4 message(s) never arrived, seq 10..11, 13..14"
        ]
        assert all(r["payload"] is None for r in rows)
        assert run.metric("hazwatch_ingest_seq_gap_messages_total") == 4
        assert await db.fetchval("SELECT count(*) FROM readings") == len(numbers)
