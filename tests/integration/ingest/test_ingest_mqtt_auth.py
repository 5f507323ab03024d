"""Broker authentication and the shipped ACL (RELIABILITY.md S1), on a private Mosquitto.

The broker runs with `allow_anonymous false`, a password file and the ACL of
deploy/mosquitto/hazwatch.acl.example (its topic root replaced by the test's): the ingest user
reads the whole root, and a device (user name = its registry key) may publish only its own
topics. Devices publish with paho over MQTT 5, so the broker's verdict on each message comes
back in its PUBACK.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import paho.mqtt.client as paho
import pytest
from ingest_support import Env, load_registry, running, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from test_ingest_mqtt import now_ms, sensor_ids

from bench.broker import Mosquitto
from hazwatch.config import Settings
from ingest.metrics import IngestMetrics
from ingest.service import IngestService

ACL_EXAMPLE = Path(__file__).parents[3] / "deploy" / "mosquitto" / "hazwatch.acl.example"
PASSWORDS = {"hazwatch-ingest": "ingest-secret", "north-d0": "d0-secret", "north-d1": "d1-secret"}


@pytest.fixture
def topic_root() -> str:
    return f"hwtest/{uuid.uuid4().hex[:8]}/v1"


@pytest.fixture
def broker(tmp_path: Path, topic_root: str) -> Iterator[Mosquitto]:
    """Overrides conftest's broker: authentication on, the shipped ACL for this topic root."""
    passwd = tmp_path / "passwd"
    for n, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
        )
    acl = tmp_path / "acl"
    acl.write_text(ACL_EXAMPLE.read_text().replace("hazwatch/v1", topic_root))
    extra = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with Mosquitto(extra=extra) as b:
        yield b


@pytest.fixture
def env(db_url: str, broker: Mosquitto, topic_root: str) -> Env:
    return Env(db_url, broker, topic_root, "hw-ingest-auth")


def as_user(env: Env, user: str | None, password: str | None) -> Settings:
    base = env.settings()
    mqtt = base.mqtt.model_copy(
        update={
            "username": user,
            "password": None if password is None else SecretStr(password),
        }
    )
    return base.model_copy(update={"mqtt": mqtt})


def device_publish(
    port: int, user: str | None, password: str | None, messages: list[tuple[str, bytes]]
) -> tuple[int, list[int]]:
    """Connect as a device and publish at QoS 1: (CONNACK reason value, PUBACK reason values)."""
    connected = threading.Event()
    connack: list[int] = []
    acks: dict[int, int] = {}
    all_acked = threading.Event()

    def on_connect(_c: paho.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        connack.append(rc.value)
        connected.set()

    def on_publish(_c: paho.Client, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        acks[mid] = rc.value
        if len(acks) == len(messages):
            all_acked.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{user}", protocol=5)
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK"
        if connack[0] != 0:
            return connack[0], []
        mids = [client.publish(topic, payload, qos=1).mid for topic, payload in messages]
        assert all_acked.wait(30), f"not every publish was answered: {acks}"
        return 0, [acks[mid] for mid in mids]
    finally:
        client.disconnect()
        client.loop_stop()


def telemetry(env: Env, device: str, n: int, start_ms: int) -> list[tuple[str, bytes]]:
    return [
        (
            env.topic("north", device),
            orjson.dumps({"ts": start_ms + 10 * i, "seq": i, "values": {"co1": 1.0 + i}}),
        )
        for i in range(n)
    ]


NOT_AUTHORIZED = 0x87
REFUSED = {0x86, NOT_AUTHORIZED}  # bad user name or password; not authorized


async def test_devices_publish_only_their_own_topics_and_strangers_are_refused(
    env: Env, db: asyncpg.Connection
) -> None:
    registry = await load_registry(db, {"north": 2})
    ids = sensor_ids(registry)
    start = now_ms() - 60_000
    port = env.broker.port
    async with running(as_user(env, "hazwatch-ingest", PASSWORDS["hazwatch-ingest"])):
        own = telemetry(env, "north-d0", 20, start)
        # d1's topic, sent by d0. Mosquitto 2.0 answers "not authorized" and then drops the
        # connection; paho reconnects and goes on, one forged message per connection.
        forged = telemetry(env, "north-d1", 3, start + 1_000)
        rc, verdicts = await asyncio.to_thread(
            device_publish, port, "north-d0", PASSWORDS["north-d0"], own + forged
        )
        assert rc == 0
        assert verdicts == [0] * 20 + [NOT_AUTHORIZED] * 3

        anonymous = await asyncio.to_thread(device_publish, port, None, None, own)
        wrong = await asyncio.to_thread(device_publish, port, "north-d1", "guess", own)
        # Refused at CONNECT (Mosquitto 2.0 says "not authorized" to both), nothing published.
        assert anonymous[0] in REFUSED and not anonymous[1]
        assert wrong[0] in REFUSED and not wrong[1]

        async def own_stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM readings") >= len(own)

        await wait_until(own_stored, timeout_s=30, what="the device's own readings")
        await asyncio.sleep(0.5)  # anything forged that slipped through would land by now
    rows = await db.fetch("SELECT sensor_id, count(*) AS n FROM readings GROUP BY sensor_id")
    assert {(r["sensor_id"], r["n"]) for r in rows} == {(ids["north-d0"], 20)}


WRONG_PASSWORD = f"not-the-password-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("user", "password"),
    [("hazwatch-ingest", WRONG_PASSWORD), (None, None)],
    ids=["wrong-password", "anonymous"],
)
async def test_the_collector_without_valid_credentials_gets_no_session(
    env: Env,
    db: asyncpg.Connection,
    user: str | None,
    password: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No session, retries with backoff, and the password it tried is in no log line."""
    caplog.set_level(logging.DEBUG)
    await load_registry(db, {"north": 1})
    service = IngestService(as_user(env, user, password), IngestMetrics.create(CollectorRegistry()))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.started.wait(), 20)
        await asyncio.sleep(2.0)  # several attempts (backoff 0.1-1 s)
        assert service.mqtt is not None
        assert not service.mqtt.connected
        assert not service.mqtt.subscribed.is_set()
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert "cannot connect" in caplog.text
    assert WRONG_PASSWORD not in caplog.text
