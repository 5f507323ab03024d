"""Faults that must lose nothing: broker restart, collector killed, database unreachable.

A paced publisher streams readings whose (device, seq) maps to a unique (sensor, ts) while a
fault is injected; afterwards every acknowledged reading must be stored exactly once, and the
one-minute rollup must count each exactly once (a redelivery merged twice would show there).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from ingest_support import Env, TcpProxy, load_registry, running, stored_keys, wait_until
from test_ingest_mqtt import check_exact, now_ms, sensor_ids, stream

from bench.broker import free_port
from bench.mqttload import precreate_session, publish
from hazwatch.config import Settings
from ingest.mqtt import subscriptions


async def count(db: asyncpg.Connection, table: str = "readings") -> int:
    n: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return n


async def test_broker_restart_mid_stream_loses_nothing(env: Env, db: asyncpg.Connection) -> None:
    registry = await load_registry(db, {"north": 20})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 1000, now_ms() - 3_600_000)  # 20k
    async with running(env.settings()) as svc:
        publisher = asyncio.create_task(
            publish("127.0.0.1", env.broker.port, messages, rate_per_s=4000, reconnect_for_s=60)
        )

        async def some_stored() -> bool:
            return await count(db) >= 4000

        await wait_until(some_stored, timeout_s=30, what="the stream to be flowing")
        await asyncio.to_thread(env.broker.stop, signal.SIGTERM)
        await asyncio.sleep(2.0)  # the broker stays down for a while
        await asyncio.to_thread(env.broker.start)
        report = await asyncio.wait_for(publisher, 90)
        assert report.acked_count == len(messages), report.errors
        assert report.connects >= 2  # the publisher did see the restart

        async def all_stored() -> bool:
            return await count(db) >= len(messages)

        await wait_until(all_stored, timeout_s=60, what="every reading after the restart")
        assert svc.metric("hazwatch_ingest_mqtt_connections_total", {"client": env.client_id}) >= 2
    await check_exact(db, registry, expected)


async def test_broker_crash_loss_is_bounded_and_every_lost_message_is_reported(
    env: Env, db: asyncpg.Connection
) -> None:
    """RELIABILITY.md R2: 50 devices at 2 messages/s, Mosquitto killed with SIGKILL mid-stream
    (`autosave_interval 1`).

    Messages the broker acknowledged but had neither saved nor handed over die with it; that
    cannot be helped downstream. What the collector must do: lose at most about a second of
    traffic with itself online, and report every message that never arrived (quarantine
    seq_gap, by device and number) once the grace period has passed."""
    registry = await load_registry(db, {"north": 50})
    ids = sensor_ids(registry)
    devices = sorted(ids)
    base_ms, step_ms, rate, per_device = now_ms() - 3_600_000, 10, 100, 24
    messages, _ = stream(env, devices, per_device, base_ms, step_ms)  # 1,200 over 12 s
    settings = env.settings()
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"seq_gap_grace_s": 3.0})}
    )
    async with running(settings) as svc:
        publisher = asyncio.create_task(
            publish("127.0.0.1", env.broker.port, messages, rate_per_s=rate, reconnect_for_s=60)
        )

        async def some_stored() -> bool:
            return await count(db) >= 400

        await wait_until(some_stored, timeout_s=30, what="the stream to be flowing")
        await asyncio.to_thread(env.broker.stop, signal.SIGKILL)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(env.broker.start)
        report = await asyncio.wait_for(publisher, 90)
        assert report.acked_count == len(messages), report.errors
        assert report.connects >= 2

        async def settled() -> bool:  # everything that will arrive has, and gaps are due
            before = await count(db)
            await asyncio.sleep(settings.mqtt.seq_gap_grace_s + 2.0)
            return await count(db) == before

        await wait_until(settled, timeout_s=60, what="the stream to settle")
        gap_messages = svc.metric("hazwatch_ingest_seq_gap_messages_total")
    by_sensor = {sensor: device for device, sensor in ids.items()}
    stored = {
        (by_sensor[sensor], (ts - base_ms) // step_ms) for sensor, ts, _ in await stored_keys(db)
    }
    published = {(d, seq) for seq in range(per_device) for d in devices}
    lost = published - stored
    reported = set()
    for row in await db.fetch("SELECT detail FROM quarantine WHERE reason = 'seq_gap'"):
        device = row["detail"].split(":", 1)[0].removeprefix("device ")
        for first, last in re.findall(r"(\d+)\.\.(\d+)", row["detail"]):
            reported |= {(device, n) for n in range(int(first), int(last) + 1)}
    assert stored <= published
    assert len(lost) <= rate  # at most a second of traffic
    assert reported == lost  # every lost message reported, and only those
    assert gap_messages == len(lost)


def _ingest_command() -> list[str]:
    script = Path(sys.executable).with_name("hazwatch")
    if script.exists():
        return [str(script), "ingest"]
    return [sys.executable, "-c", "from hazwatch.cli import main; main()", "ingest"]


async def _precreate_session(env: Env) -> None:
    """Create the collector's persistent session, so messages queue before it first runs."""
    topics = subscriptions(env.settings().mqtt)
    await asyncio.to_thread(precreate_session, "127.0.0.1", env.broker.port, env.client_id, topics)


async def test_collector_killed_mid_batch_loses_and_duplicates_nothing(
    env: Env, db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    registry = await load_registry(db, {"north": 30})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 1000, now_ms() - 3_600_000)  # 30k
    await _precreate_session(env)
    child_env = {
        **os.environ,
        "HAZWATCH_DATABASE__URL": db_url,
        "HAZWATCH_MQTT__PORT": str(env.broker.port),
        "HAZWATCH_MQTT__TOPIC_ROOT": env.topic_root,
        "HAZWATCH_MQTT__CLIENT_ID": env.client_id,
        "HAZWATCH_MQTT__RECONNECT_MAX_S": "1",
        "HAZWATCH_INGEST__BATCH_MAX_AGE_MS": "100",
        "HAZWATCH_LOG_LEVEL": "INFO",
    }
    log = (tmp_path / "ingest.log").open("ab")

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *_ingest_command(), env=child_env, stdout=log, stderr=log
        )

    publisher = asyncio.create_task(
        publish("127.0.0.1", env.broker.port, messages, rate_per_s=3000)
    )
    proc = await start()
    try:
        for threshold in (5_000, 15_000):

            async def reached(threshold: int = threshold) -> bool:
                return await count(db) >= threshold

            await wait_until(reached, timeout_s=60, what=f"{threshold} readings")
            proc.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, acks unsent
            assert await proc.wait() == -signal.SIGKILL
            proc = await start()
        report = await asyncio.wait_for(publisher, 60)
        assert report.acked_count == len(messages)

        async def all_stored() -> bool:
            return await count(db) >= len(messages)

        await wait_until(all_stored, timeout_s=60, what="every reading after two kills")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0  # a clean shutdown exits 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
    await check_exact(db, registry, expected)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def _behind_proxy(env: Env, db_url: str) -> tuple[TcpProxy, Settings]:
    """A started proxy to the test's database, and small-buffer settings that reach it
    through the proxy only."""
    target = urlsplit(db_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432, free_port())
    await proxy.start()
    settings = env.settings(buffer_max_rows=3000, batch_max_rows=1000)
    database = settings.database.model_copy(update={"url": _via(db_url, proxy.port)})
    return proxy, settings.model_copy(update={"database": database})


async def test_database_unreachable_for_20s_loses_nothing(
    env: Env, db: asyncpg.Connection, db_url: str
) -> None:
    registry = await load_registry(db, {"north": 20})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 1250, now_ms() - 3_600_000)  # 25k over ~25 s
    proxy, settings = await _behind_proxy(env, db_url)
    bad_during_outage = [(env.topic("north", "north-d0"), b"{broken") for _ in range(5)]
    try:
        async with running(settings) as svc:
            publisher = asyncio.create_task(
                publish("127.0.0.1", env.broker.port, messages, rate_per_s=1000)
            )

            async def some_stored() -> bool:
                return await count(db) >= 2000

            await wait_until(some_stored, timeout_s=30, what="the stream to be flowing")
            await proxy.cut()
            await asyncio.sleep(1.0)  # a COMMIT the server had before the cut may still finish
            cut_at = await count(db)
            await publish("127.0.0.1", env.broker.port, bad_during_outage, client_id="pub-bad")
            await asyncio.sleep(19.0)  # the rest of the outage
            assert await count(db) == cut_at  # really nothing got through
            assert svc.metric("hazwatch_ingest_queue_depth_rows") > 0  # holding, not dropping
            await proxy.start()
            report = await asyncio.wait_for(publisher, 60)
            assert report.acked_count == len(messages)

            async def all_stored() -> bool:
                return await count(db) >= len(messages) and await count(db, "quarantine") >= 5

            await wait_until(all_stored, timeout_s=90, what="the backlog after the outage")
            assert svc.metric("hazwatch_ingest_db_errors_total", {"writer": "readings"}) > 0
            assert svc.metric("hazwatch_ingest_quarantine_dropped_total") == 0
    finally:
        await proxy.close()
    await check_exact(db, registry, expected)
    assert await count(db, "quarantine") == 5


async def test_hung_database_times_out_holds_the_stream_and_loses_nothing(
    env: Env, db: asyncpg.Connection, db_url: str
) -> None:
    """RELIABILITY.md R6, with the server's traffic frozen by a proxy instead of SIGSTOP on the
    shared postmaster: connections stay open and answer nothing for 15 s. Each attempt must end
    by its timeout (command 5 s, connect 2 s) rather than hang, the stream is held, not
    dropped, and everything arrives once the server answers again."""
    registry = await load_registry(db, {"north": 20})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 1000, now_ms() - 3_600_000)  # 20k over ~20 s
    proxy, settings = await _behind_proxy(env, db_url)
    try:
        async with running(settings) as svc:
            publisher = asyncio.create_task(
                publish("127.0.0.1", env.broker.port, messages, rate_per_s=1000)
            )

            async def some_stored() -> bool:
                return await count(db) >= 2000

            await wait_until(some_stored, timeout_s=30, what="the stream to be flowing")
            proxy.freeze()
            frozen_at = await count(db)
            await asyncio.sleep(15.0)
            assert await count(db) <= frozen_at + 1000  # at most the batch already committing
            errors = svc.metric("hazwatch_ingest_db_errors_total", {"writer": "readings"})
            assert errors >= 2  # attempts ended by their timeouts and were tried again
            assert svc.metric("hazwatch_ingest_queue_depth_rows") > 0  # held, not dropped
            proxy.thaw()
            report = await asyncio.wait_for(publisher, 60)
            assert report.acked_count == len(messages)

            async def all_stored() -> bool:
                return await count(db) >= len(messages)

            await wait_until(all_stored, timeout_s=90, what="the backlog after the hang")
    finally:
        proxy.thaw()
        await proxy.close()
    await check_exact(db, registry, expected)
