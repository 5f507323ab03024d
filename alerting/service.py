"""The alarm service: the engine's state, fed by ingest inside its transactions.

The ingest writer owns one `AlarmService` and calls, one at a time:

- `on_batch(conn, inserted)` inside the transaction that inserted a batch, with only the rows
  actually inserted. It evaluates them (pure), writes transitions, events, notifications,
  derived readings and changed latches in that transaction, and returns a callback to run
  after the commit: only then does the service adopt the new state. If the transaction fails,
  the callback is not called and the same batch can be offered again.
- `tick(conn, now_us)` about once a second, in a transaction of its own, with the same
  contract: timers (stale, delays completing, holds expiring) and shelves running out.

`AlarmService.start(conn, snapshot)` compiles the rules and rebuilds the state from the
database, so a restart raises no duplicate episode and misses no clear (docs/alarms.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from alerting import actions, engine, store, tracker
from alerting.engine import Step
from alerting.rules import CompiledRules, Rule, compile_snapshot
from alerting.state import NEVER, EngineState
from alerting.tracker import Subject
from hazwatch.domain import US_PER_S, ReadingBatch
from hazwatch.registry.snapshot import RegistrySnapshot

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class AlarmCounters:
    """Totals since start, for /metrics."""

    readings: int = 0
    late: int = 0
    unknown: int = 0
    transitions: int = 0
    events: int = 0
    rebuilds: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


class AlarmService:
    def __init__(
        self,
        rules: CompiledRules,
        state: EngineState,
        subjects: list[Subject],
        vote_subjects: list[Subject],
        *,
        timer_grace_us: int,
    ) -> None:
        self.rules = rules
        self.state = state
        self._subjects = subjects
        self._vote_subjects = vote_subjects
        self._timer_grace_us = timer_grace_us
        self._version = 0
        self._needs_rebuild = False
        self.counters = AlarmCounters()

    @classmethod
    async def start(
        cls,
        conn: asyncpg.Connection,
        snapshot: RegistrySnapshot,
        *,
        now_us: int | None = None,
        timer_grace_s: float = 2.0,
        history_len: int | None = None,
    ) -> AlarmService:
        """Compile the snapshot's rules and rebuild the engine state from the database.
        `now_us` starts the stale timers of sensors that have never reported."""
        rules = compile_snapshot(snapshot, history_len=history_len)
        subjects = [
            Subject(s.sensor_id, s.key, s.asset_id, s.asset_key, s.site_id, s.site_key)
            for s in snapshot.sensors
        ]
        assets = {a.asset_id: a for a in snapshot.assets.values()}
        sites = {s.key: s.site_id for s in snapshot.sites.values()}
        vote_subjects = []
        for vote in rules.votes:
            asset = assets[vote.asset_id]
            vote_subjects.append(
                Subject(None, None, asset.asset_id, asset.key, sites[asset.site_key],
                        asset.site_key)
            )  # fmt: skip
        state = await rebuild_state(conn, rules, never_seen_since_us=now_us)
        return cls(rules, state, subjects, vote_subjects,
                   timer_grace_us=round(timer_grace_s * US_PER_S))  # fmt: skip

    async def on_batch(
        self, conn: asyncpg.Connection, inserted: ReadingBatch
    ) -> Callable[[], None]:
        """Evaluate the inserted rows and write the consequences in `conn`'s transaction;
        run the returned callback after the commit."""
        await self._rebuild_if_needed(conn)
        step = engine.evaluate(self.rules, self.state, inserted)
        await self._write(conn, step)
        self.counters.readings += step.accepted + step.late
        self.counters.late += step.late
        self.counters.unknown += step.unknown
        return self._adopter(step)

    async def tick(self, conn: asyncpg.Connection, now_us: int) -> Callable[[], None]:
        """Fire timers due by `now_us` minus the grace (readings still in flight are not made
        late by a timer) and expire shelves; same contract as `on_batch`."""
        await self._rebuild_if_needed(conn)
        step = engine.tick(self.rules, self.state, now_us - self._timer_grace_us)
        await self._write(conn, step)
        expired = await actions.expire_shelves(conn, at=EPOCH + timedelta(microseconds=now_us))
        self.counters.events += len(expired)
        return self._adopter(step)

    def _adopter(self, step: Step) -> Callable[[], None]:
        base = self._version

        def adopt() -> None:
            if self._version != base:
                # Two steps were computed from the same state: the database has both, the
                # memory only one. Read the state back before the next step.
                log.error("alarm steps overlapped; the state is rebuilt from the database")
                self._needs_rebuild = True
                return
            self.state.apply(step.delta)
            self._version += 1

        return adopt

    async def _rebuild_if_needed(self, conn: asyncpg.Connection) -> None:
        if self._needs_rebuild:
            self.state = await rebuild_state(conn, self.rules, never_seen_since_us=None)
            self._needs_rebuild = False
            self._version += 1
            self.counters.rebuilds += 1

    async def _write(self, conn: asyncpg.Connection, step: Step) -> None:
        await store.insert_derived(conn, step.derived)
        delta = step.delta
        if delta.persist.any():
            keep = np.flatnonzero(delta.persist)
            ids = self.rules.sensor_id[delta.index[keep]]
            await store.write_engine_state(conn, ids, delta.rows.take(keep))
        if len(step.transitions):
            items = []
            for t in step.transitions.to_list():
                if t.rule is Rule.VOTE:
                    subject = self._vote_subjects[t.subject]
                    name = self.rules.votes[t.subject].rule_name
                else:
                    subject = self._subjects[t.subject]
                    name = t.rule.label
                items.append((subject, name, t))
                self.counters.by_rule[name.split(":")[0]] = (
                    self.counters.by_rule.get(name.split(":")[0], 0) + 1
                )
            events = await tracker.record(conn, items)
            self.counters.transitions += len(items)
            self.counters.events += len(events)


async def rebuild_state(
    conn: asyncpg.Connection, rules: CompiledRules, *, never_seen_since_us: int | None
) -> EngineState:
    """The engine state as the committed database has it (docs/alarms.md, "Restart")."""
    state = EngineState.empty(rules.n, rules.history_len, last_ts_us=never_seen_since_us)
    rows = state.rows
    position = {int(s): i for i, s in enumerate(rules.sensor_id)}
    for r in await store.last_readings(conn, rules.sensor_id.tolist()):
        i = position[r["sensor_id"]]
        if r["last_us"] is not None:
            rows.last_ts[i] = r["last_us"]
            rows.eval_ts[i] = r["last_us"]
        if r["last_valid"] is not None:
            rows.last_valid[i] = r["last_valid"]
    for r in await store.load_engine_state(conn):
        i = position.get(r["sensor_id"])
        if i is None:
            continue  # a sensor no longer active
        rows.eval_ts[i] = max(int(rows.eval_ts[i]), r["state_ts_us"])
        rows.raw[i] = [(r["raw"] >> b) & 1 for b in range(8)]
        rows.delayed[i] = [(r["delayed"] >> b) & 1 for b in range(8)]
        rows.since[i] = r["since_us"]
        rows.tier[i] = r["tiers"]
        rows.member_ts[i] = r["member_ts_us"]
    need = np.flatnonzero(rules.needs_history & (rows.eval_ts != NEVER))
    if len(need):
        widest = np.maximum(
            np.maximum(rules.rate_window_us[need], rules.trend_window_us[need]),
            rules.derive_window_us[need],
        )
        history = await store.recent_valid(
            conn, rules.sensor_id[need].tolist(), (rows.eval_ts[need] - widest).tolist(),
            rules.history_len,
        )  # fmt: skip
        per_sensor: dict[int, list[tuple[int, float]]] = {}
        for r in history:
            per_sensor.setdefault(position[r["sensor_id"]], []).append((r["ts_us"], r["value"]))
        h = rules.history_len
        for i, points in per_sensor.items():
            points.reverse()  # oldest first
            n = len(points)
            rows.hist_t[i, h - n :] = [p[0] for p in points]
            rows.hist_v[i, h - n :] = [p[1] for p in points]
            rows.hist_n[i] = n
    return state
