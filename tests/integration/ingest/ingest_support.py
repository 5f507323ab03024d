"""Helpers for the ingest integration tests: a registry, a private broker, a running service.

Each test gets its own database (tests/conftest.py), its own Mosquitto on a free port (started
and stopped by pid), a unique topic root and a unique client id. The fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import orjson
from prometheus_client import CollectorRegistry

from bench.broker import Mosquitto
from hazwatch.config import DatabaseSettings, IngestSettings, MqttSettings, Settings
from hazwatch.registry.parse import parse_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry
from ingest.metrics import IngestMetrics
from ingest.service import IngestService

CHANNELS = ("co1", "co2")


def registry_yaml(sites: dict[str, int], channels: tuple[str, ...] = CHANNELS) -> str:
    """A registry with `n` MQTT CO detectors per site, devices named `<site>-d<i>`."""
    lines = ["version: 1", "sites:"]
    for site, n in sites.items():
        lines += [
            f"  - key: {site}",
            f"    name: Site {site}",
            "    assets:",
            f"      - {{key: {site}-a, kind: gas_holder, name: Holder {site}}}",
            "    devices:",
        ]
        for i in range(n):
            lines += [
                f"      - key: {site}-d{i}",
                f"        asset: {site}-a",
                "        protocol: mqtt",
                "        sensors:",
            ]
            lines += [f"          - {{channel: {ch}, kind: co}}" for ch in channels]
    return "\n".join(lines) + "\n"


async def load_registry(db: asyncpg.Connection, sites: dict[str, int]) -> RegistrySnapshot:
    await store_registry(db, parse_registry(registry_yaml(sites)))
    return await RegistrySnapshot.load(db)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str
) -> None:
    """Poll `condition` until it holds; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Env:
    db_url: str
    broker: Mosquitto
    topic_root: str
    client_id: str

    def settings(self, **ingest: object) -> Settings:
        return Settings(
            database=DatabaseSettings(url=self.db_url, command_timeout_s=5, connect_timeout_s=2),
            mqtt=MqttSettings(
                port=self.broker.port,
                topic_root=self.topic_root,
                client_id=self.client_id,
                keepalive_s=10,
                reconnect_min_s=0.1,
                reconnect_max_s=1.0,
            ),
            ingest=IngestSettings(db_retry_max_s=1.0, **ingest),  # type: ignore[arg-type]
        )

    def topic(self, site: str, device: str, kind: str = "telemetry") -> str:
        return f"{self.topic_root}/{site}/{device}/{kind}"


@dataclass
class Running:
    service: IngestService
    metrics: IngestMetrics
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: object) -> AsyncIterator[Running]:
    """The ingest service in this event loop, subscribed; stopped cleanly on exit."""
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    service = IngestService(settings, metrics, **kwargs)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.started.wait(), 20)
        assert service.mqtt is not None
        await asyncio.wait_for(service.mqtt.subscribed.wait(), 20)
        yield Running(service, metrics, registry, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def telemetry(ts_ms: int, seq: int, **values: float | None) -> bytes:
    return orjson.dumps({"ts": ts_ms, "seq": seq, "values": values})


async def stored_keys(db: asyncpg.Connection) -> list[tuple[int, int, float | None]]:
    rows = await db.fetch(
        """SELECT sensor_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, value
           FROM readings ORDER BY 1, 2"""
    )
    return [(r["sensor_id"], r["ts_ms"], r["value"]) for r in rows]


async def rollup_matches_readings(db: asyncpg.Connection) -> None:
    """readings_1m counts every stored reading exactly once (a redelivery never counts twice)."""
    raw = await db.fetchval("SELECT count(*) FROM readings WHERE quality < 64")
    rolled = await db.fetchval("SELECT coalesce(sum(count), 0) FROM readings_1m")
    assert rolled == raw


class TcpProxy:
    """A loopback TCP proxy the test can cut (open connections reset, new ones refused) or
    freeze (connections stay open but nothing moves, as with a server stopped by SIGSTOP)."""

    def __init__(self, target_host: str, target_port: int, port: int) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns):
            writer.transport.abort()
        self._conns.clear()

    async def close(self) -> None:
        await self.cut()  # aborted transports end every pipe, so the handlers return
        self._flowing.set()  # and frozen ones find their connection closed
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._conns.add(writer)
        writers = [writer]
        try:
            await self._flowing.wait()  # frozen: the connection is accepted, then nothing moves
            if writer.transport.is_closing():
                return  # cut or closed meanwhile
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._conns.add(up_writer)
            writers.append(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._tasks.discard(task)
            for w in writers:
                self._conns.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
