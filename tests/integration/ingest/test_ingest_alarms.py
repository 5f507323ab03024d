"""Alarms wired into ingest: a reading published over MQTT and the alarm it causes commit in
the same transaction, and the LISTEN client hears the event."""

from __future__ import annotations

import time

import asyncpg
import orjson
from ingest_support import Env, load_registry, running, telemetry, wait_until

from alerting.bridge import IngestAlarms, rules_fingerprint
from bench.mqttload import publish
from hazwatch.config import DatabaseSettings
from hazwatch.registry.snapshot import RegistrySnapshot


async def test_an_alarm_commits_with_the_reading_that_caused_it(
    env: Env, db: asyncpg.Connection, db_url: str
) -> None:
    registry = await load_registry(db, {"north": 2})
    sensor = registry.sensor("north-d0/co1")
    assert sensor is not None
    alarms = IngestAlarms(DatabaseSettings(url=db_url))
    heard: list[dict[str, object]] = []
    listener = await asyncpg.connect(db_url)
    await listener.add_listener(
        "hazwatch_alarm_events", lambda *args: heard.append(orjson.loads(str(args[3])))
    )
    now_ms = int(time.time() * 1000)
    # CO at 200 ppm: red at once. One message, then the batch commits.
    messages = [(env.topic("north", "north-d0"), telemetry(now_ms, 1, co1=200.0, co2=5.0))]
    try:
        async with running(
            env.settings(), hook=alarms.hook, tick=alarms.tick, on_registry=alarms.on_registry
        ):
            report = await publish("127.0.0.1", env.broker.port, messages, client_id="pub-alarm")
            assert report.acked_count == 1

            async def stored() -> bool:
                count = await db.fetchval(
                    "SELECT count(*) FROM readings WHERE sensor_id = $1", sensor.sensor_id
                )
                return bool(count)

            await wait_until(stored, timeout_s=20, what="the reading")
            # Same transaction: once the reading is visible, so is its alarm.
            alarm = await db.fetchrow(
                "SELECT tier, state, hazwatch_ts_to_us(raised_at) AS raised_us FROM alarms "
                "WHERE sensor_id = $1 AND rule = 'high'",
                sensor.sensor_id,
            )
            assert alarm is not None
            assert (alarm["tier"], alarm["state"]) == (4, "active_unacked")
            assert alarm["raised_us"] == now_ms * 1000

            async def notified() -> bool:
                return any(h["rule"] == "high" for h in heard)

            await wait_until(notified, timeout_s=10, what="the notification")
    finally:
        await listener.close()
        await alarms.aclose()
    (event,) = [h for h in heard if h["rule"] == "high"]
    assert (event["sensor"], event["kind"], event["colour"]) == ("north-d0/co1", "raised", "red")
    assert alarms.service is not None
    assert alarms.service.counters.readings >= 2


async def test_a_changed_registry_rebuilds_the_engine(db: asyncpg.Connection) -> None:
    first = await load_registry(db, {"north": 1})
    same = await RegistrySnapshot.load(db)
    assert rules_fingerprint(first) == rules_fingerprint(same)
    bigger = await load_registry(db, {"north": 2})
    assert rules_fingerprint(bigger) != rules_fingerprint(first)
