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
