"""`hazwatch demo`: the whole platform on one machine, on a scripted scenario.

It creates a fresh database, loads the demo city, and runs in one process, under one asyncio
loop: the Modbus simulators (the city's PLCs, detector gateways and pipeline RTUs on their
registry ports), the MQTT publisher (the city's MQTT devices, on a thread of its own), ingest
(MQTT and Modbus collectors, the store, the alarm engine in each batch's transaction), the
notifier (alarm events to the crews' MQTT topic) and the API. The caller watches `DemoRun`
through `gather()` and stops it with `stop()`.

Both simulators run the same plant models from the same seed, scenario and start time, so the
Modbus stations and the MQTT stations of one pipeline see one physics.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from alerting.bridge import IngestAlarms
from alerting.notify import MqttAlarmPublisher, Notifier
from api.accounts import create_token, create_user
from api.app import create_app
from api.auth import Role
from hazwatch import migrate as migrations
from hazwatch.config import Settings
from hazwatch.console import ConsoleState, gather_state
from hazwatch.db import connection
from hazwatch.errors import DemoError
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import load_registry
from hazwatch.registry.store import store_registry
from ingest.metrics import IngestMetrics
from ingest.modbus import ModbusCollector
from ingest.service import IngestService, Pipeline
from simulators.modbus_server import SimFleet, SimTime, SimulationSource
from simulators.mqtt_publisher import MqttPublisher, PublisherConfig, PublishReport
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

log = logging.getLogger(__name__)

DEMO_USER = "demo"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    registry: Path
    database: str = "hazwatch_demo"
    scenario: str = "demo"
    seed: int = 7
    api_host: str = "127.0.0.1"
    api_port: int = 8080


@dataclass
class DemoRun:
    """The running demo: its parts, and what the console needs to show them."""

    settings: Settings
    options: DemoOptions
    api_url: str = ""
    token: str = ""
    publish_report: PublishReport | None = None
    _metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _last: tuple[float, float] = (0.0, 0.0)  # (monotonic time, readings stored) at last gather
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _api_port: int = 0  # chosen by prepare(), so the address is known before the run

    def stop(self) -> None:
        self._stop.set()

    @property
    def readings_total(self) -> int:
        value = self._metrics_registry.get_sample_value("hazwatch_ingest_readings_stored_total")
        return 0 if value is None else int(value)

    async def gather(self, *, transitions: int = 12) -> ConsoleState:
        """What the console shows now (the latest `transitions`); readings/s is the rate since
        the previous call."""
        now, total = time.monotonic(), float(self.readings_total)
        then, before = self._last
        rate = (total - before) / (now - then) if then else 0.0
        self._last = (now, total)
        async with connection(self.settings.database) as conn:
            return await gather_state(
                conn,
                readings_per_s=rate,
                readings_total=int(total),
                api_url=self.api_url,
                token=self.token,
                now=dt.datetime.now(dt.UTC),
                limit=transitions,
            )

    # ------------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """A fresh database with the demo city in it, and a user with a token for the API."""
        base, _, _ = self.settings.database.url.rpartition("/")
        admin = self.settings.database.model_copy(update={"url": f"{base}/postgres"})
        async with connection(admin) as conn:
            await migrations.create_database(conn, self.options.database, drop=True)
        async with connection(self.settings.database) as conn:
            await migrations.migrate(conn)
            await store_registry(conn, load_registry(self.options.registry), actor="demo")
            await create_user(conn, DEMO_USER, Role.ENGINEER, None, actor="demo")
            _record, self.token = await create_token(
                conn, DEMO_USER, name="demo", expires_in=dt.timedelta(days=1),
                now=dt.datetime.now(dt.UTC), actor="demo",
            )  # fmt: skip
        self._api_port = self.options.api_port or _free_port(self.options.api_host)
        self.api_url = f"http://{self.options.api_host}:{self._api_port}"

    async def run(self) -> None:
        """Run every part until `stop()`, then stop them: publisher first, ingest last, so
        every reading published is stored and acknowledged before the demo ends."""
        start_ms = int(time.time() * 1000)
        scenario = load_scenario(self.options.scenario)
        registry = load_registry(self.options.registry)
        snapshot = snapshot_from_file(registry)
        by_protocol: dict[str, list[str]] = {"mqtt": [], "modbus": []}
        for key, device in snapshot.devices.items():
            by_protocol[device.protocol].append(key)

        def simulation(protocol: str) -> Simulation:
            return Simulation(
                registry, seed=self.options.seed, start_ms=start_ms, scenario=scenario,
                devices=by_protocol[protocol],
            )  # fmt: skip

        fleet = SimFleet(
            snapshot, SimulationSource(simulation("modbus")), sim_time=SimTime(speed=1.0),
            seed=self.options.seed, devices=set(by_protocol["modbus"]),
        )  # fmt: skip
        ingest_stop = asyncio.Event()
        service = self._ingest()
        publisher = MqttPublisher(simulation("mqtt"), self._publisher_config())
        server = self._api_server()
        async with fleet, _Parts() as parts:
            ingest = parts.start(service.run(ingest_stop), "ingest")
            await parts.until(service.started.wait())
            publishing = parts.start(asyncio.to_thread(publisher.run), "MQTT simulator")
            parts.start(self._notify(), "notifier")
            api = parts.start(server.serve(), "API")
            await parts.until(self._stop.wait())

            publisher.stop()
            self.publish_report = await publishing
            server.should_exit = True
            ingest_stop.set()
            await asyncio.gather(ingest, api)

    def _ingest(self) -> IngestService:
        metrics = IngestMetrics.create(self._metrics_registry)
        alarms = IngestAlarms(self.settings.database)

        def modbus(pipeline: Pipeline) -> ModbusCollector:
            return ModbusCollector(
                pipeline.registry, pipeline.batcher, quarantine=pipeline.quarantine,
                settings=pipeline.settings.modbus, registry=self._metrics_registry,
            )  # fmt: skip

        return IngestService(
            self.settings, metrics, collectors=[modbus],
            hook=alarms.hook, tick=alarms.tick, on_registry=alarms.on_registry,
        )  # fmt: skip

    def _publisher_config(self) -> PublisherConfig:
        mqtt = self.settings.mqtt
        password = None if mqtt.password is None else mqtt.password.get_secret_value()
        return PublisherConfig(
            host=mqtt.host, port=mqtt.port, username=mqtt.username, password=password,
            topic_root=mqtt.topic_root, client_id_prefix=f"hazwatch-demo-sim-{_run_id()}",
        )  # fmt: skip

    async def _notify(self) -> None:
        publisher = MqttAlarmPublisher(
            self.settings.mqtt,
            client_id=f"hazwatch-demo-notify-{_run_id()}",
            ack_timeout_s=self.settings.notify.webhook_timeout_s,
        )
        async with publisher, httpx.AsyncClient() as http:
            notifier = Notifier(
                database=self.settings.database, settings=self.settings.notify,
                topic_root=self.settings.mqtt.topic_root, publisher=publisher, http=http,
                clock=lambda: dt.datetime.now(dt.UTC),
            )  # fmt: skip
            await notifier.run()

    def _api_server(self) -> uvicorn.Server:
        port = self._api_port or self.options.api_port or _free_port(self.options.api_host)
        self.api_url = f"http://{self.options.api_host}:{port}"
        config = uvicorn.Config(
            create_app(self.settings), host=self.options.api_host, port=port,
            log_level="warning", lifespan="on",
        )  # fmt: skip
        return _QuietServer(config)


def demo_settings(settings: Settings, options: DemoOptions) -> Settings:
    """The demo's own database, and an MQTT session of its own that the broker forgets soon
    after the demo ends (the ingest default keeps a day's session under a fixed client id)."""
    base, _, _ = settings.database.url.rpartition("/")
    database = settings.database.model_copy(update={"url": f"{base}/{options.database}"})
    mqtt = settings.mqtt.model_copy(
        update={"client_id": f"hazwatch-demo-{_run_id()}", "session_expiry_s": 300}
    )
    return settings.model_copy(update={"database": database, "mqtt": mqtt})


class _QuietServer(uvicorn.Server):
    """uvicorn inside the demo's loop: the demo owns SIGINT/SIGTERM, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Parts:
    """The demo's concurrent parts. Waiting on anything fails at once, naming the part, if a
    part ends early (a part that dies must not leave a console that looks healthy); leaving
    the block cancels whatever is still running."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[object], str] = {}

    def start(self, work: Awaitable[T], name: str) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks[task] = name
        return task

    async def until(self, awaitable: Awaitable[object]) -> None:
        waiter = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait(
                [waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not waiter.done():
                waiter.cancel()
        for task in done:
            if task is not waiter:
                cause = None if task.cancelled() else task.exception()
                raise DemoError(f"the demo's {self._tasks[task]} stopped unexpectedly") from cause

    async def __aenter__(self) -> _Parts:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _run_id() -> str:
    return uuid.uuid4().hex[:6]
