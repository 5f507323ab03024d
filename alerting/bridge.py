"""The alarm service as ingest's transaction hook and timer.

    alarms = IngestAlarms()
    IngestService(settings, metrics, hook=alarms.hook, tick=alarms.tick,
                  on_registry=alarms.on_registry)

The service is started (rules compiled, state rebuilt from the database) on the first hook or
tick after a registry snapshot arrives, and started again when a refreshed snapshot changes
anything the rules depend on. It is started on a connection of its own: the hook runs inside
the transaction that has just inserted the batch, and a rebuild that saw those rows would take
them as already evaluated. Ingest calls the hook and the tick one at a time on its single
writer connection, and runs the returned callback after each commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import asyncpg
import orjson

from alerting.service import AlarmService
from hazwatch.config import DatabaseSettings
from hazwatch.db import connection
from hazwatch.domain import US_PER_S, ReadingBatch
from hazwatch.registry.snapshot import RegistrySnapshot

log = logging.getLogger(__name__)


def rules_fingerprint(snapshot: RegistrySnapshot) -> bytes:
    """Everything in a snapshot the compiled rules depend on."""
    sensors = [
        (s.sensor_id, s.key, s.kind, s.period_s, dict(s.params), s.overrides.model_dump(),
         None if s.derive is None else s.derive.model_dump())
        for s in snapshot.sensors
    ]  # fmt: skip
    votes = sorted(
        (a.asset_id, a.key, [v.model_dump() for v in a.votes]) for a in snapshot.assets.values()
    )
    return orjson.dumps([sensors, votes], option=orjson.OPT_SORT_KEYS)


class IngestAlarms:
    def __init__(
        self,
        database: DatabaseSettings,
        *,
        timer_grace_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._grace_s = timer_grace_s
        self._clock = clock
        self._snapshot: RegistrySnapshot | None = None
        self._fingerprint: bytes | None = None
        self._started_fingerprint: bytes | None = None
        self.service: AlarmService | None = None

    def on_registry(self, snapshot: RegistrySnapshot) -> None:
        fingerprint = rules_fingerprint(snapshot)
        if fingerprint != self._fingerprint:
            self._snapshot, self._fingerprint = snapshot, fingerprint

    async def hook(self, conn: asyncpg.Connection, inserted: ReadingBatch) -> Callable[[], None]:
        service = await self._ready()
        return await service.on_batch(conn, inserted)

    async def tick(self, conn: asyncpg.Connection) -> Callable[[], None]:
        service = await self._ready()
        return await service.tick(conn, self._now_us())

    def _now_us(self) -> int:
        return round(self._clock() * US_PER_S)

    async def _ready(self) -> AlarmService:
        if self._snapshot is None:
            raise RuntimeError("the alarm hook ran before ingest announced a registry snapshot")
        if (
            self.service is None
            or self.service.needs_rebuild
            or self._started_fingerprint != self._fingerprint
        ):
            if self.service is not None:
                log.info("registry rules changed: alarm engine rebuilt from the database")
            async with connection(self._database) as conn:
                self.service = await AlarmService.start(
                    conn, self._snapshot, now_us=self._now_us(), timer_grace_s=self._grace_s
                )
            self._started_fingerprint = self._fingerprint
        return self.service
