"""The ingest service: collectors -> batcher -> store (+ the alarm hook), run until stopped.

`IngestService.run(stop)` loads the registry, starts the collectors (MQTT unless disabled, and
any others given as factories, e.g. Modbus), the store loop, the quarantine and device-status
writers, the engine's timer `tick` and the registry refresh (on every announced change, and
periodically). When `stop` is set it shuts
down in the order that loses nothing: collectors stop reading, the batcher and writers drain and
commit, the acknowledgements go out, then the collectors disconnect. If the database does not
come back within `shutdown_timeout_s`, it gives up without acknowledging what it could not
commit: the broker keeps those messages for the next start.

Every writer owns its own connection (`DbSession`). An error that is not the database being
unavailable (a bug, a hook that raises) stops the service with that error; the broker then
redelivers whatever was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from hazwatch.config import Settings
from hazwatch.domain import US_PER_S
from hazwatch.errors import DatabaseError
from hazwatch.listen import ChannelListener
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import RULES_CHANNEL
from ingest.batcher import Batcher, BatcherClosed
from ingest.dbsession import Backoff, DbSession
from ingest.decode import DecodeLimits, SensorIndex
from ingest.metrics import IngestMetrics
from ingest.mqtt import MqttCollector
from ingest.quarantine import QuarantineSink
from ingest.status import StatusWriter
from ingest.store import ReadingStore, TxHook, TxWork

log = logging.getLogger(__name__)


class Collector(Protocol):
    """What the service needs of a collector (MQTT, Modbus)."""

    async def run(self) -> None:
        """Collect until `stop_input`; reconnect inside."""

    def stop_input(self) -> None:
        """Stop taking new input; acknowledgements of committed data may still go out."""

    async def aclose(self) -> None:
        """Send what is still owed to the source and close the connections."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What a collector factory gets to build its collector with."""

    settings: Settings
    registry: RegistrySnapshot
    batcher: Batcher
    quarantine: QuarantineSink
    metrics: IngestMetrics


CollectorFactory = Callable[[Pipeline], Collector]


def decode_limits(settings: Settings) -> DecodeLimits:
    ingest = settings.ingest
    return DecodeLimits(
        max_payload_bytes=ingest.max_payload_bytes,
        max_future_us=int(ingest.max_future_s * US_PER_S),
        max_age_us=int(ingest.raw_retention_days * 86_400 * US_PER_S),
    )


class IngestService:
    def __init__(
        self,
        settings: Settings,
        metrics: IngestMetrics,
        *,
        hook: TxHook | None = None,
        tick: TxWork | None = None,
        on_registry: Callable[[RegistrySnapshot], None] | None = None,
        mqtt: bool = True,
        collectors: Sequence[CollectorFactory] = (),
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._hook = hook
        self._tick = tick
        self._on_registry = on_registry
        self._mqtt = mqtt
        self._factories = collectors
        ingest = settings.ingest
        self.batcher = Batcher(
            max_rows=ingest.batch_max_rows,
            max_age_ms=ingest.batch_max_age_ms,
            capacity_rows=ingest.buffer_max_rows,
        )
        backoff = Backoff(min_s=0.2, max_s=ingest.db_retry_max_s)

        def session(name: str) -> DbSession:
            return DbSession(
                settings.database,
                name=name,
                backoff=backoff,
                on_connect=ReadingStore.prepare if name == "readings" else None,
                on_error=lambda _exc: metrics.db_errors.labels(name).inc(),
            )

        self.store = ReadingStore(session("readings"))
        self._aux = session("status")
        self.quarantine = QuarantineSink(
            session("quarantine"),
            metrics,
            max_records=ingest.quarantine_max_records,
            max_bytes=ingest.quarantine_max_bytes,
        )
        self.status = StatusWriter(self._aux, metrics)
        self.collectors: list[Collector] = []
        self.mqtt: MqttCollector | None = None
        metrics.watch(lambda: self.batcher.depth_rows, lambda: self.quarantine.depth)
        self.started = asyncio.Event()
        self._registry_changed = asyncio.Event()
        self._listener = ChannelListener(
            settings.database, RULES_CHANNEL, self._registry_changed.set
        )

    async def run(self, stop: asyncio.Event) -> None:
        async with self._listening_for_registry_changes():
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        registry = await self._load_registry()
        self._announce(registry)
        pipeline = Pipeline(self._settings, registry, self.batcher, self.quarantine, self._metrics)
        if self._mqtt:
            self.mqtt = MqttCollector(
                self._settings.mqtt,
                index=SensorIndex.from_snapshot(registry),
                limits=decode_limits(self._settings),
                batcher=self.batcher,
                quarantine=self.quarantine,
                status=self.status,
                metrics=self._metrics,
            )
            self.collectors.append(self.mqtt)
        self.collectors.extend(factory(pipeline) for factory in self._factories)

        async with asyncio.TaskGroup() as tg:
            writers = [
                tg.create_task(self._store_loop(), name="store"),
                tg.create_task(self.quarantine.run(), name="quarantine"),
                tg.create_task(self.status.run(), name="status"),
            ]
            inputs = [tg.create_task(c.run(), name=type(c).__name__) for c in self.collectors]
            periodic = [tg.create_task(self._refresh_registry(), name="registry")]
            if self._tick is not None:
                periodic.append(tg.create_task(self._tick_loop(self._tick), name="tick"))
            self.started.set()
            log.info("ingest running with %d collector(s)", len(self.collectors))
            await stop.wait()
            log.info("ingest stopping: draining the batcher and the writers")
            for task in periodic:
                task.cancel()
            for collector in self.collectors:
                collector.stop_input()
            self.batcher.close()
            self.quarantine.close()
            self.status.close()
            await self._drain(writers)
            for collector in self.collectors:
                await collector.aclose()
            for task in inputs:
                await task
        await self.store.close()
        await self._aux.close()
        log.info("ingest stopped")

    async def _drain(self, writers: list[asyncio.Task[None]]) -> None:
        timeout_s = self._settings.ingest.shutdown_timeout_s
        _done, pending = await asyncio.wait(writers, timeout=timeout_s)
        if pending:
            log.error(
                "gave up after %.0f s waiting for the database: %d reading(s) and %d quarantine"
                " record(s) not committed and not acknowledged; the broker keeps them",
                timeout_s,
                self.batcher.depth_rows,
                self.quarantine.depth,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _store_loop(self) -> None:
        m = self._metrics
        while True:
            try:
                flush = await self.batcher.get()
            except BatcherClosed:
                return
            result = await self.store.write(flush.batch, self._hook)
            m.readings_stored.inc(result.inserted)
            m.readings_duplicate.inc(result.duplicates)
            m.batch_latency.observe(result.latency_s)
            m.batch_rows.observe(len(flush.batch))
            flush.committed()

    async def _tick_loop(self, tick: TxWork) -> None:
        interval_s = self._settings.ingest.tick_interval_s
        next_at = time.monotonic()
        while True:
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self.store.transact(tick)
            next_at = max(next_at, time.monotonic() - interval_s)  # no catch-up storm

    async def _refresh_registry(self) -> None:
        """Reload the registry at once when a registry load or a rule edit announces a change
        (channel hazwatch_rules), and every `registry_refresh_s` in any case: a new device's
        messages are accepted within moments of the load, before its stale timer could run
        out."""
        while True:
            if await self._listener.ensure():
                self._registry_changed.set()  # reopened: a change may have gone unheard
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.ingest.registry_refresh_s):
                    await self._registry_changed.wait()
            self._registry_changed.clear()
            registry = await self._load_registry()
            if self.mqtt is not None:
                self.mqtt.update_index(SensorIndex.from_snapshot(registry))
            self._announce(registry)

    @contextlib.asynccontextmanager
    async def _listening_for_registry_changes(self) -> AsyncIterator[None]:
        """LISTEN from before the first registry load, so no change slips in between."""
        await self._listener.ensure()
        try:
            yield
        finally:
            await self._listener.aclose()

    async def _load_registry(self) -> RegistrySnapshot:
        try:
            return await self._aux.transact(RegistrySnapshot.load)
        except asyncpg.UndefinedTableError as exc:
            raise DatabaseError(
                f"the database has no registry tables ({exc}): run `hazwatch db migrate`"
            ) from exc

    def _announce(self, registry: RegistrySnapshot) -> None:
        log.debug(
            "registry: %d sites, %d devices, %d sensors",
            len(registry.sites),
            len(registry.devices),
            len(registry.sensors),
        )
        if self._on_registry is not None:
            self._on_registry(registry)


async def run_until_signalled(service: IngestService) -> None:
    """Run the service until SIGINT or SIGTERM (a second signal stops at once)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: stopping without waiting for the last commits")
            if task is not None:
                task.cancel()
            return
        log.info("signal %d: shutting down", signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await service.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
