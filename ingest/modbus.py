"""Modbus TCP collection: the registry's Modbus devices polled on schedule into the batcher.

    async with ModbusCollector(snapshot, sink, quarantine=q, settings=s) as collector:
        await collector.run()          # until stop_input() or cancellation

It is a collector of `ingest.service.IngestService` (run / stop_input / aclose); `hazwatch
ingest` runs it beside the MQTT collector, into the same batcher and quarantine.

One `ModbusLine` per (host, port) owns one pymodbus client and one task: polls of the units
behind a gateway never overlap (the task is the line's lock). Each poll group of each device
has its own schedule on the monotonic clock; the line runs whichever is due first.

Isolation (docs/modbus.md): every request has the device's own short timeout; a unit on a
shared line that fails `breaker_trip_after` polls in a row is skipped and probed again with
backoff (`Breaker`), so a dead unit costs its neighbours one timeout per probe, not one per
period. A line that cannot connect retries with capped, jittered backoff (pymodbus' own
reconnect loop is off: `reconnect_delay=0`, pymodbus #1794); while it is down its polls fail
without touching the network. Junk frames and dropped connections reset the connection.

Every scheduled poll yields one reading per sensor of the group: the decoded value, or NaN
with a bad quality code saying why (COMM_TIMEOUT, COMM_REFUSED, PROTOCOL_ERROR, 80 + Modbus
exception code), so the alarm engine sees a comm failure on the poll it happens. Readings are
stamped with the wall-clock time the poll completed (its last answer, or the failure).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from prometheus_client import CollectorRegistry

from hazwatch.config import ModbusSettings
from hazwatch.errors import ModbusConfigError
from hazwatch.registry.snapshot import RegistrySnapshot
from ingest.modbus_decode import DevicePlan, SensorPoint, plan_device
from ingest.modbus_health import Breaker, Clock, LogLimiter, SystemClock
from ingest.modbus_line import (
    DeviceState,
    DeviceStats,
    ModbusLine,
    Outcome,
    PollRecord,
    QuarantineSink,
    ReadingSink,
)
from ingest.modbus_metrics import ModbusMetrics

__all__ = [
    "DeviceStats",
    "ModbusCollector",
    "Outcome",
    "PollRecord",
    "QuarantineSink",
    "ReadingSink",
]

log = logging.getLogger(__name__)


class ModbusCollector:
    """Every Modbus device of a registry snapshot, polled into one reading sink."""

    def __init__(
        self,
        snapshot: RegistrySnapshot,
        sink: ReadingSink,
        *,
        quarantine: QuarantineSink,
        settings: ModbusSettings | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_poll: Callable[[PollRecord], None] | None = None,
    ) -> None:
        settings = settings or ModbusSettings()
        self.metrics = ModbusMetrics(registry or CollectorRegistry())
        clock = clock or SystemClock()
        rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        by_line: dict[tuple[str, int], list[DeviceState]] = {}
        framers: dict[tuple[str, int], str] = {}
        for info in snapshot.devices.values():
            if info.protocol != "modbus" or info.modbus is None:
                continue
            conn = info.modbus
            points = [
                SensorPoint(s.sensor_id, s.channel, s.modbus, s.range_min, s.range_max)
                for s in info.sensors
                if s.modbus is not None
            ]
            try:
                plan = plan_device(info.key, conn, points)
            except ValueError as exc:
                raise ModbusConfigError(f"device {info.key}: {exc}") from exc
            if not plan.groups:
                continue
            line = (conn.host, conn.port)
            if framers.setdefault(line, conn.framer) != conn.framer:
                raise ModbusConfigError(
                    f"devices on {conn.host}:{conn.port} mix framers {framers[line]} and "
                    f"{conn.framer} ({info.key}); one connection speaks one framing"
                )
            shortest = min(g.period_s for g in plan.groups)
            by_line.setdefault(line, []).append(
                DeviceState(
                    plan=plan,
                    line=f"{conn.host}:{conn.port}",
                    breaker=Breaker(
                        settings.breaker_trip_after,
                        max(settings.probe_min_s, shortest),
                        max(settings.probe_max_s, shortest),
                    ),
                    limiter=LogLimiter(settings.log_quiet_s),
                )
            )
        self._devices = {d.plan.key: d for ds in by_line.values() for d in ds}
        self.lines = [
            ModbusLine(
                host=host, port=port, framer=framers[(host, port)], devices=devices, sink=sink,
                quarantine=quarantine, settings=settings, metrics=self.metrics, clock=clock,
                rng=rng, on_poll=on_poll,
            )
            for (host, port), devices in sorted(by_line.items())
        ]  # fmt: skip
        for device in self._devices.values():
            self.metrics.up.labels(device.plan.key).set(math.nan)
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def plans(self) -> Mapping[str, DevicePlan]:
        return {key: d.plan for key, d in self._devices.items()}

    def stats(self) -> dict[str, DeviceStats]:
        """Counters per device key (copies)."""
        return {key: d.stats.copy() for key, d in self._devices.items()}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run(self) -> None:
        """Poll every line until `stop_input()` (or cancellation); an unexpected error in any
        line surfaces here."""
        if self._stopped.is_set():
            return
        log.info("modbus: polling %d devices on %d lines", len(self._devices), len(self.lines))
        async with asyncio.TaskGroup() as tasks:
            self._tasks = [
                tasks.create_task(line.run(), name=f"modbus {line.name}") for line in self.lines
            ]
            await self._stopped.wait()

    def stop_input(self) -> None:
        """Stop polling now: the polls in flight are abandoned, nothing more goes to the sink
        (the ingest service closes the batcher right after)."""
        self._stopped.set()
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        """Close every line's connection."""
        for line in self.lines:
            await line.close()
