"""Helpers for the Modbus integration tests: sinks that record, registries from YAML text, and a
collector running against in-process simulators on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry

from hazwatch.config import ModbusSettings
from hazwatch.domain import Quality, ReadingBatch
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import parse_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from ingest.modbus import ModbusCollector, PollRecord
from simulators.modbus_server import SimFleet, SimTime, ValueSource

HEADER = """
version: 1
sites:
  - key: s
    name: Test site
    assets:
      - {key: a, kind: other, name: Test asset}
    devices:
"""


def snapshot(devices_yaml: str) -> RegistrySnapshot:
    """A snapshot of one site whose devices are given as YAML (indented for `devices:`)."""
    return snapshot_from_file(parse_registry(HEADER + devices_yaml, source="test"))


@dataclass(frozen=True, slots=True)
class Row:
    sensor_id: int
    ts_us: int
    value: float
    quality: int

    @property
    def good(self) -> bool:
        return not Quality.is_bad(self.quality)


class ListSink:
    """A reading sink that keeps every row and lets a test await a condition on them."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.batches = 0
        self._changed = asyncio.Condition()

    async def put(self, batch: ReadingBatch, on_commit: Callable[[], None] | None = None) -> None:
        assert batch.sensor_id.dtype == np.int32 and batch.ts_us.dtype == np.int64
        async with self._changed:
            self.batches += 1
            self.rows.extend(
                Row(int(s), int(t), float(v), int(q))
                for s, t, v, q in zip(
                    batch.sensor_id, batch.ts_us, batch.value, batch.quality, strict=True
                )
            )
            self._changed.notify_all()
        if on_commit is not None:
            on_commit()

    async def wait_for(self, predicate: Callable[[list[Row]], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self.rows))

    def of(self, sensor_id: int) -> list[Row]:
        return [r for r in self.rows if r.sensor_id == sensor_id]

    def latest(self, sensor_id: int) -> Row | None:
        rows = self.of(sensor_id)
        return rows[-1] if rows else None


class PollLog(list[PollRecord]):
    """The collector's poll records; a test awaits a condition on them (re-checked after
    every poll)."""

    def __init__(self) -> None:
        super().__init__()
        self._event = asyncio.Event()

    def record(self, poll: PollRecord) -> None:
        self.append(poll)
        self._event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._event.clear()
                await self._event.wait()


@dataclass
class ListQuarantine:
    items: list[tuple[str, str, str, str, bytes]] = field(default_factory=list)

    async def put(self, source: str, topic: str, reason: str, detail: str, payload: bytes) -> None:
        self.items.append((source, topic, reason, detail, payload))


@dataclass
class Rig:
    fleet: SimFleet
    collector: ModbusCollector
    snapshot: RegistrySnapshot
    sink: ListSink
    quarantine: ListQuarantine
    polls: PollLog
    metrics: CollectorRegistry

    def sensor_id(self, key: str) -> int:
        info = self.snapshot.sensor(key)
        assert info is not None, key
        return info.sensor_id

    def good_no_nan(self) -> bool:
        return all(math.isfinite(r.value) for r in self.sink.rows if r.good)


@contextlib.asynccontextmanager
async def rig(
    snap: RegistrySnapshot,
    source: ValueSource,
    settings: ModbusSettings | None = None,
    sim_time: SimTime | None = None,
) -> AsyncIterator[Rig]:
    """Simulators for the snapshot on free ports and a running collector polling them."""
    sink, quarantine, polls = ListSink(), ListQuarantine(), PollLog()
    metrics = CollectorRegistry()
    async with SimFleet(snap, source, any_port=True, sim_time=sim_time) as fleet:
        target = fleet.retarget(snap)
        collector = ModbusCollector(
            target, sink, quarantine=quarantine, settings=settings, registry=metrics,
            on_poll=polls.record,
        )  # fmt: skip
        async with collector:
            task = asyncio.create_task(collector.run())
            try:
                yield Rig(fleet, collector, target, sink, quarantine, polls, metrics)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
