"""End to end on a private Mosquitto and the real TimescaleDB: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import pytest
from ingest_support import (
    Env,
    load_registry,
    rollup_matches_readings,
    running,
    stored_keys,
    telemetry,
    wait_until,
)

from bench.mqttload import publish
from hazwatch.domain import Quality
from hazwatch.registry.snapshot import RegistrySnapshot


def now_ms() -> int:
    return int(time.time() * 1000)


def sensor_ids(registry: RegistrySnapshot, channel: str = "co1") -> dict[str, int]:
    ids = {}
    for s in registry.sensors:
        if s.channel == channel and s.device_key is not None:
            ids[s.device_key] = s.sensor_id
    return ids


def stream(env: Env, devices: list[str], per_device: int, base_ms: int, step_ms: int = 10):
    """(device, seq) -> one co1 reading at a unique ts; returned with the expected rows."""
    messages, expected = [], {}
    for seq in range(per_device):
        for d, device in enumerate(devices):
            ts = base_ms + seq * step_ms
            value = float((d * 7 + seq) % 1000)
            site = device.rsplit("-", 1)[0]
            messages.append((env.topic(site, device), telemetry(ts, seq, co1=value)))
            expected[(device, ts)] = value
    return messages, expected


async def check_exact(
    db: asyncpg.Connection, registry: RegistrySnapshot, expected: dict[tuple[str, int], float]
) -> None:
    by_id = {v: k for k, v in sensor_ids(registry).items()}
    got = {(by_id[s], ts): v for s, ts, v in await stored_keys(db)}
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    assert not missing, f"{len(missing)} acknowledged readings not stored"
    assert not extra, f"{len(extra)} readings stored that were never published"
    assert got == expected
    await rollup_matches_readings(db)


async def test_100k_published_readings_are_all_stored(env: Env, db: asyncpg.Connection) -> None:
    registry = await load_registry(db, {"north": 25, "south": 25})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 2000, now_ms() - 3_600_000)
    assert len(messages) == 100_000
    async with running(env.settings()) as svc:
        report = await publish("127.0.0.1", env.broker.port, messages, client_id="pub-100k")
        assert report.acked_count == len(messages), report.errors

        async def all_stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM readings") >= len(messages)

        await wait_until(all_stored, timeout_s=120, what="100k readings")
    await check_exact(db, registry, expected)
    assert svc.metric("hazwatch_ingest_readings_stored_total") == 100_000
    assert svc.metric("hazwatch_ingest_messages_received_total", {"source": "mqtt"}) == 100_000
    assert svc.service.mqtt is not None
    assert svc.service.mqtt.acks_sent == 100_000


@pytest.mark.parametrize("protocol", [5, 4])
async def test_each_message_published_three_times_is_stored_once(
    env: Env, db: asyncpg.Connection, protocol: int
) -> None:
    registry = await load_registry(db, {"north": 10})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 300, now_ms() - 600_000, step_ms=1000)
    tripled = [m for m in messages for _ in range(3)]
    settings = env.settings()
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"protocol": protocol})}
    )
    async with running(settings) as svc:
        report = await publish("127.0.0.1", env.broker.port, tripled, client_id="pub-3x")
        assert report.acked_count == len(tripled)

        async def all_seen() -> bool:
            return (
                svc.metric("hazwatch_ingest_messages_received_total", {"source": "mqtt"})
                >= len(tripled)
                and svc.metric("hazwatch_ingest_queue_depth_rows") == 0
            )

        await wait_until(all_seen, timeout_s=60, what="all copies received")
    await check_exact(db, registry, expected)
    assert svc.metric("hazwatch_ingest_readings_stored_total") == len(messages)
    assert svc.metric("hazwatch_ingest_readings_duplicate_total") == 2 * len(messages)


async def test_clean_shutdown_acknowledges_everything(env: Env, db: asyncpg.Connection) -> None:
    registry = await load_registry(db, {"north": 5})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 200, now_ms() - 600_000)
    async with running(env.settings()) as svc:
        await publish("127.0.0.1", env.broker.port, messages)

        async def received() -> bool:
            got = svc.metric("hazwatch_ingest_messages_received_total", {"source": "mqtt"})
            return got >= len(messages)

        await wait_until(received, timeout_s=30, what="messages received")
    # Stopped cleanly: everything committed was acknowledged, so the session has nothing to
    # redeliver and the next run receives nothing.
    await check_exact(db, registry, expected)
    async with running(env.settings()) as again:
        await asyncio.sleep(1.0)  # give a redelivery time to show up; none is expected
        assert again.metric("hazwatch_ingest_messages_received_total", {"source": "mqtt"}) == 0


async def test_every_bad_input_is_quarantined_while_good_traffic_flows(
    env: Env, db: asyncpg.Connection
) -> None:
    registry = await load_registry(db, {"north": 4, "south": 1})
    devices = [d for d in sorted(sensor_ids(registry)) if d.startswith("north")]
    good, expected = stream(env, devices, 500, now_ms() - 600_000)
    t = now_ms()
    north = env.topic("north", "north-d0")
    bad = [
        (north, b"{not json", "malformed_json"),
        (north, b'{"values": {"co1": 1}}', "bad_schema"),
        (north, b'{"ts": %d, "values": {"co1": "high"}}' % t, "bad_schema"),
        (north, b"x" * (256 * 1024 + 1), "too_large"),
        (north, telemetry(t, 1, nope=1.0), "unknown_sensor"),
        (env.topic("north", "ghost"), telemetry(t, 1, co1=1.0), "unknown_device"),
        (env.topic("north", "south-d0"), telemetry(t, 1, co1=1.0), "wrong_site"),
        (north, b'{"ts": %d, "values": {"co1": NaN}}' % t, "not_finite"),
        (north, b'{"ts": %d, "values": {"co1": 1e400}}' % t, "not_finite"),
        (north, telemetry(t, 1, co1=5000.0), "out_of_range"),
        (north, telemetry(t + 3_600_000, 1, co1=1.0), "future_ts"),
        (north, telemetry(t - 400 * 86_400_000, 1, co1=1.0), "ancient_ts"),
        (env.topic("north", "north-d0", "status"), b"sleepy", "bad_status"),
    ]
    # Bad messages interleaved with the good stream, so good traffic has to pass them by.
    mixed = list(good)
    for i, (topic, payload, _reason) in enumerate(bad):
        mixed.insert(i * 150, (topic, payload))
    async with running(env.settings()) as svc:
        report = await publish("127.0.0.1", env.broker.port, mixed)
        assert report.acked_count == len(mixed)

        async def all_in() -> bool:
            n = await db.fetchval("SELECT count(*) FROM quarantine")
            return n >= len(bad) and await db.fetchval("SELECT count(*) FROM readings") >= len(good)

        await wait_until(all_in, timeout_s=30, what="good readings and quarantine")
    await check_exact(db, registry, expected)
    rows = await db.fetch("SELECT topic, reason, detail, payload FROM quarantine")
    by_reason: dict[str, int] = {}
    for r in rows:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    want: dict[str, int] = {}
    for _t, _p, reason in bad:
        want[reason] = want.get(reason, 0) + 1
    assert by_reason == want
    for r in rows:
        assert r["topic"].startswith(env.topic_root)
        assert r["detail"]
        assert r["payload"]
        if r["reason"] == "too_large":
            assert len(r["payload"]) == 4096
    for reason, n in want.items():
        assert (
            svc.metric("hazwatch_ingest_quarantined_total", {"source": "mqtt", "reason": reason})
            == n
        )


async def test_device_status_updates_the_device(env: Env, db: asyncpg.Connection) -> None:
    await load_registry(db, {"north": 2})
    async with running(env.settings()):
        report = await publish(
            "127.0.0.1",
            env.broker.port,
            [
                (env.topic("north", "north-d0", "status"), b"online"),
                (env.topic("north", "north-d1", "status"), b"online"),
                (env.topic("north", "north-d1", "status"), b"offline"),
            ],
            retain=True,
        )
        assert report.acked_count == 3

        async def updated() -> bool:
            rows = await db.fetch(
                "SELECT key, status FROM devices WHERE status_at IS NOT NULL ORDER BY key"
            )
            return [tuple(r) for r in rows] == [("north-d0", "online"), ("north-d1", "offline")]

        await wait_until(updated, timeout_s=20, what="device status")


async def test_null_and_bad_quality_readings_are_kept(env: Env, db: asyncpg.Connection) -> None:
    await load_registry(db, {"north": 1})
    t = now_ms() - 1000
    payload = orjson.dumps(
        [
            {"ts": t, "values": {"co1": None, "co2": None}, "quality": {"co1": 66}},
            {"ts": t + 1, "values": {"co1": 12.5}, "quality": {"co1": 16}},
        ]
    )
    async with running(env.settings()):
        await publish("127.0.0.1", env.broker.port, [(env.topic("north", "north-d0"), payload)])

        async def stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM readings") == 3

        await wait_until(stored, timeout_s=20, what="3 readings")
    rows = await db.fetch(
        """SELECT s.channel, r.value, r.quality FROM readings r JOIN sensors s USING (sensor_id)
           ORDER BY r.ts, s.channel"""
    )
    assert [tuple(r) for r in rows] == [
        ("co1", None, Quality.COMM_TIMEOUT),
        ("co2", None, Quality.BAD),
        ("co1", 12.5, Quality.UNCERTAIN),
    ]


async def test_a_device_added_to_the_registry_is_accepted_within_seconds(
    env: Env, db: asyncpg.Connection
) -> None:
    """A registry load announces itself; the running collector re-reads the registry at once
    instead of at its periodic refresh (60 s), so the new device's first messages are stored,
    not quarantined as unknown, and its stale timer never sees a silence that was ours."""
    await load_registry(db, {"north": 1})
    settings = env.settings()
    assert settings.ingest.registry_refresh_s >= 60
    async with running(settings) as svc:
        registry = await load_registry(db, {"north": 2})  # north-d1 is new
        new_sensor = sensor_ids(registry)["north-d1"]
        topic = env.topic("north", "north-d1")

        async def stored() -> bool:
            await publish("127.0.0.1", env.broker.port, [(topic, telemetry(now_ms(), 1, co1=3.0))])
            await asyncio.sleep(0.5)
            n = await db.fetchval("SELECT count(*) FROM readings WHERE sensor_id = $1", new_sensor)
            return bool(n)

        await wait_until(stored, timeout_s=10, what="the new device's reading")
        unknown = svc.metric(
            "hazwatch_ingest_quarantined_total", {"source": "mqtt", "reason": "unknown_device"}
        )
        assert unknown <= 1  # at most a message that raced the announcement
