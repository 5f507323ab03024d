"""The alarm service as ingest's transaction hook and timer.

    alarms = IngestAlarms(settings.database)
    IngestService(settings, metrics, hook=alarms.hook, tick=alarms.tick,
                  on_registry=alarms.on_registry)
    ...
    await alarms.aclose()

The service is started (rules compiled, state rebuilt from the database) on the first hook or
tick after a registry snapshot arrives. It is started on a connection of its own: the hook
runs inside the transaction that has just inserted the batch, and a rebuild that saw those
rows would take them as already evaluated. Ingest calls the hook and the tick one at a time on
its single writer connection, and runs the returned callback after each commit.

Rule changes reach the running engine without a restart: the API's rule edits and
`hazwatch registry load` announce themselves on channel `hazwatch_rules`, which the bridge
LISTENs to on a connection of its own; ingest's periodic registry refresh is the fallback.
The next tick loads the registry and, if anything the rules depend on changed, reloads them
in its transaction (`AlarmService.tick(..., snapshot=...)`): state carried over, episodes kept,
the tier changes the new rules decide written as events (`alerting.reload`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import asyncpg
import orjson

from alerting.rules import RuleCompileError
from alerting.service import AlarmService
from hazwatch.config import DatabaseSettings
from hazwatch.db import connection
from hazwatch.domain import US_PER_S, ReadingBatch
from hazwatch.listen import ChannelListener
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import RULES_CHANNEL

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
        listen: bool = True,
    ) -> None:
        self._database = database
        self._grace_s = timer_grace_s
        self._clock = clock
        self._snapshot: RegistrySnapshot | None = None
        self._fingerprint: bytes | None = None
        self._running: tuple[RegistrySnapshot | None, bytes | None] = (None, None)
        self._refused: bytes | None = None  # rules that did not compile (until they change)
        self._listener = (
            ChannelListener(database, RULES_CHANNEL, self._on_notify) if listen else None
        )
        self._heard = False  # a rule change was announced: load the registry at the next tick
        self.service: AlarmService | None = None
        self.reloads = 0

    def on_registry(self, snapshot: RegistrySnapshot) -> None:
        """Ingest's registry snapshots: the first starts the engine; a later one that differs
        makes the next tick read the registry itself (a refresh loaded before a change
        committed must not undo it)."""
        fingerprint = rules_fingerprint(snapshot)
        if self._snapshot is None:
            self._snapshot, self._fingerprint = snapshot, fingerprint
        elif fingerprint != self._fingerprint:
            self._heard = True

    async def hook(self, conn: asyncpg.Connection, inserted: ReadingBatch) -> Callable[[], None]:
        service = await self._ready()
        return await service.on_batch(conn, inserted)

    async def tick(self, conn: asyncpg.Connection) -> Callable[[], None]:
        service = await self._ready()
        await self._keep_listening()
        if self._heard:
            self._heard = False
            loaded = await RegistrySnapshot.load(conn)
            if rules_fingerprint(loaded) != self._fingerprint:
                self._snapshot, self._fingerprint = loaded, rules_fingerprint(loaded)
        snapshot, fingerprint = self._snapshot, self._fingerprint
        if snapshot is None or fingerprint in (self._running[1], self._refused):
            return await service.tick(conn, self._now_us())
        log.info("registry rules changed: reloading the alarm rules")
        try:
            adopt = await service.tick(conn, self._now_us(), snapshot=snapshot)
        except RuleCompileError as exc:
            problem = str(exc)
        else:

            def adopt_reload() -> None:
                adopt()
                self._running = (snapshot, fingerprint)
                self.reloads += 1

            return adopt_reload
        # Keep evaluating under the rules that compiled; try again when the registry changes.
        log.error("the registry's new alarm rules do not compile, kept the old ones: %s", problem)
        self._refused = fingerprint
        return await service.tick(conn, self._now_us())

    async def aclose(self) -> None:
        """Close the LISTEN connection."""
        if self._listener is not None:
            await self._listener.aclose()

    def _now_us(self) -> int:
        return round(self._clock() * US_PER_S)

    async def _ready(self) -> AlarmService:
        """The running service: started from the first snapshot, and started again from the
        database (under the rules it ran) if it ever refused to go on."""
        if self.service is not None and not self.service.needs_rebuild:
            return self.service
        if self.service is None:
            if self._snapshot is None or self._fingerprint is None:
                raise RuntimeError("the alarm hook ran before ingest announced a registry snapshot")
            self._running = (self._snapshot, self._fingerprint)
        else:
            log.warning("alarm engine rebuilt from the database")
        snapshot = self._running[0]
        assert snapshot is not None
        async with connection(self._database) as conn:
            self.service = await AlarmService.start(
                conn, snapshot, now_us=self._now_us(), timer_grace_s=self._grace_s
            )
        return self.service

    async def _keep_listening(self) -> None:
        """(Re)open the LISTEN connection; after a gap, assume a change was missed."""
        if self._listener is not None and await self._listener.ensure():
            self._heard = True

    def _on_notify(self) -> None:
        self._heard = True
