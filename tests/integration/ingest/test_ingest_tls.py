"""The collector over TLS (RELIABILITY.md S2), on a private Mosquitto with a TLS listener.

Certificates are made for each test with the openssl command line: a CA and a server
certificate for 127.0.0.1 signed by it, and a second CA that signed nothing. Devices publish on
the broker's plain listener; the collector reads from its TLS listener.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from ingest_support import Env, load_registry, running, wait_until
from prometheus_client import CollectorRegistry
from test_ingest_mqtt import check_exact, now_ms, sensor_ids, stream

from bench.broker import Mosquitto, free_port
from bench.mqttload import publish
from hazwatch.config import Settings
from ingest.metrics import IngestMetrics
from ingest.service import IngestService


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(dir_: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=HazWatch test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dir_,
    )  # fmt: skip
    return dir_ / f"{name}.crt"


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    _make_ca(tmp_path, "ca")
    _make_ca(tmp_path, "other-ca")
    (tmp_path / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=tmp_path,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=tmp_path,
    )  # fmt: skip
    return tmp_path


@pytest.fixture
def tls_port() -> int:
    return free_port()


@pytest.fixture
def broker(tls_dir: Path, tls_port: int) -> Iterator[Mosquitto]:
    """Overrides conftest's broker: the same private Mosquitto plus a TLS listener."""
    extra = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {tls_dir / 'ca.crt'}\n"
        f"certfile {tls_dir / 'server.crt'}\n"
        f"keyfile {tls_dir / 'server.key'}\n"
    )
    with Mosquitto(extra=extra) as b:
        yield b


def over_tls(env: Env, port: int, ca_file: Path | None) -> Settings:
    base = env.settings()
    mqtt = base.mqtt.model_copy(
        update={"port": port, "tls_ca_file": None if ca_file is None else str(ca_file)}
    )
    return base.model_copy(update={"mqtt": mqtt})


async def test_readings_arrive_over_tls(
    env: Env, db: asyncpg.Connection, tls_dir: Path, tls_port: int
) -> None:
    registry = await load_registry(db, {"north": 5})
    devices = sorted(sensor_ids(registry))
    messages, expected = stream(env, devices, 400, now_ms() - 600_000)
    async with running(over_tls(env, tls_port, tls_dir / "ca.crt")) as svc:
        report = await publish("127.0.0.1", env.broker.port, messages)
        assert report.acked_count == len(messages)

        async def all_stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM readings") >= len(messages)

        await wait_until(all_stored, timeout_s=60, what="readings over TLS")
    await check_exact(db, registry, expected)
    assert svc.service.mqtt is not None
    assert svc.service.mqtt.acks_sent == len(messages)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


# paho's `_ssl_wrap_socket` does not close the TLS socket when the handshake fails; CPython
# closes it as soon as the exception is dropped (reference counting), with a ResourceWarning.
# The test checks below that no descriptor is left open.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
@pytest.mark.parametrize("ca", ["other-ca.crt", None], ids=["untrusted-certificate", "plaintext"])
async def test_no_connection_without_a_trusted_tls_handshake(
    env: Env, db: asyncpg.Connection, tls_dir: Path, tls_port: int, ca: str | None
) -> None:
    """A broker certificate from a CA the collector does not trust, or a plaintext client on
    the TLS port: no session, no readings, and the collector keeps trying without crashing or
    leaking descriptors."""
    await load_registry(db, {"north": 1})
    settings = over_tls(env, tls_port, None if ca is None else tls_dir / ca)
    service = IngestService(settings, IngestMetrics.create(CollectorRegistry()))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.started.wait(), 20)
        await asyncio.sleep(1.5)
        descriptors = open_descriptors()
        await asyncio.sleep(3.0)  # more reconnect attempts (backoff 0.1-1 s)
        assert service.mqtt is not None
        assert not service.mqtt.connected
        assert not service.mqtt.subscribed.is_set()
        assert not task.done()
        assert open_descriptors() <= descriptors + 1  # + the attempt under way, if any
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await db.fetchval("SELECT count(*) FROM readings") == 0
