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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from alerting import actions, engine, store, tracker
from alerting.engine import Step
from alerting.reload import carry_state, reconcile
from alerting.rules import CompiledRules, Rule, compile_snapshot
from alerting.state import NEVER, EngineState, StateDelta
from alerting.tracker import Subject
from alerting.transitions import Transition
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
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Setup:
    """Compiled rules and who each position and vote is, from one registry snapshot."""

    rules: CompiledRules
    subjects: list[Subject]
    vote_subjects: list[Subject]

    @classmethod
    def from_snapshot(cls, snapshot: RegistrySnapshot, *, history_len: int | None) -> Setup:
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
        return cls(rules, subjects, vote_subjects)

    def items(self, transitions: list[Transition]) -> list[tuple[Subject, str, Transition]]:
        """Transitions with their subject and rule name, as the tracker records them."""
        items = []
        for t in transitions:
            if t.rule is Rule.VOTE:
                items.append(
                    (self.vote_subjects[t.subject], self.rules.votes[t.subject].rule_name, t)
                )
            else:
                items.append((self.subjects[t.subject], t.rule.label, t))
        return items


class AlarmService:
    def __init__(
        self, setup: Setup, state: EngineState, *, timer_grace_us: int, history_len: int | None
    ) -> None:
        self.setup = setup
        self.state = state
        self._timer_grace_us = timer_grace_us
        self._history_len = history_len
        self._version = 0
        self._needs_rebuild = False
        self.counters = AlarmCounters()

    @property
    def rules(self) -> CompiledRules:
        return self.setup.rules

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
        `now_us` starts the stale timers of sensors that have never reported. `conn` must not
        see uncommitted readings of a batch still to be evaluated (they would count as
        evaluated): use a connection of its own, not the one inside ingest's transaction."""
        setup = Setup.from_snapshot(snapshot, history_len=history_len)
        state = await rebuild_state(conn, setup.rules, never_seen_since_us=now_us)
        return cls(setup, state, timer_grace_us=round(timer_grace_s * US_PER_S),
                   history_len=history_len)  # fmt: skip

    async def on_batch(
        self, conn: asyncpg.Connection, inserted: ReadingBatch
    ) -> Callable[[], None]:
        """Evaluate the inserted rows and write the consequences in `conn`'s transaction;
        run the returned callback after the commit."""
        self._check_state()
        step = engine.evaluate(self.rules, self.state, inserted)
        await self._write(conn, step, self.setup)
        self.counters.readings += step.accepted + step.late
        self.counters.late += step.late
        self.counters.unknown += step.unknown
        return self._adopter(step)

    async def tick(
        self, conn: asyncpg.Connection, now_us: int, *, snapshot: RegistrySnapshot | None = None
    ) -> Callable[[], None]:
        """Fire timers due by `now_us` minus the grace (readings still in flight are not made
        late by a timer) and expire shelves; same contract as `on_batch`. With `snapshot`,
        first take its rules (`reload`): the timers then run under them."""
        self._check_state()
        at_us = now_us - self._timer_grace_us
        reloaded = None
        setup, state = self.setup, self.state
        if snapshot is not None:
            reloaded = setup, state = await self._reload(conn, snapshot, now_us=now_us, at_us=at_us)
        step = engine.tick(setup.rules, state, at_us)
        await self._write(conn, step, setup)
        expired = await actions.expire_shelves(conn, at=EPOCH + timedelta(microseconds=now_us))
        self.counters.events += len(expired)
        return self._adopter(step, reloaded)

    async def _reload(
        self, conn: asyncpg.Connection, snapshot: RegistrySnapshot, *, now_us: int, at_us: int
    ) -> tuple[Setup, EngineState]:
        """The snapshot's rules with the running state carried over (`alerting.reload`); the
        tier changes they decide at once are written in `conn`'s transaction. Sensors new to
        the engine are rebuilt from the database with the others."""
        old = self.setup
        setup = Setup.from_snapshot(snapshot, history_len=self._history_len)
        if np.isin(setup.rules.sensor_id, old.rules.sensor_id).all():
            carried = carry_state(old.rules, self.state, setup.rules, never_seen_since_us=now_us)
        else:
            carried = await rebuild_state(conn, setup.rules, never_seen_since_us=now_us)
        settled = reconcile(old.rules, self.state, setup.rules, carried, at_us=at_us)
        state = carried.updated(settled.delta)
        dropped = [
            Transition(rule, subject, at_us, tier, 0, self._last_valid(rule, subject),
                       rule is Rule.TREND)
            for rule, subject, tier in settled.dropped
        ]  # fmt: skip
        await self._write_rows(conn, setup.rules, settled.delta)
        items = setup.items(settled.transitions.to_list()) + old.items(dropped)
        await self._record(conn, items)
        log.info(
            "alarm rules reloaded: %d sensors, %d votes, %d tier change(s)",
            setup.rules.n, len(setup.rules.votes), len(items),
        )  # fmt: skip
        return setup, state

    def _last_valid(self, rule: Rule, subject: int) -> float:
        return math.nan if rule is Rule.VOTE else float(self.state.rows.last_valid[subject])

    def _adopter(
        self, step: Step, reloaded: tuple[Setup, EngineState] | None = None
    ) -> Callable[[], None]:
        base = self._version

        def adopt() -> None:
            if self._version != base:
                # Two steps were computed from the same state: the database has both, the
                # memory only one. Refuse to go on until started again from the database.
                log.error("alarm steps overlapped; the service must be started again")
                self._needs_rebuild = True
                return
            if reloaded is not None:
                self.setup, self.state = reloaded
            self.state.apply(step.delta)
            self._version += 1

        return adopt

    @property
    def needs_rebuild(self) -> bool:
        """True after two steps were adopted out of order: start a new service."""
        return self._needs_rebuild

    def _check_state(self) -> None:
        if self._needs_rebuild:
            raise RuntimeError(
                "the alarm state no longer matches the database: start the service again"
            )

    async def _write(self, conn: asyncpg.Connection, step: Step, setup: Setup) -> None:
        await store.insert_derived(conn, step.derived)
        await self._write_rows(conn, setup.rules, step.delta)
        if len(step.transitions):
            await self._record(conn, setup.items(step.transitions.to_list()))

    @staticmethod
    async def _write_rows(
        conn: asyncpg.Connection, rules: CompiledRules, delta: StateDelta
    ) -> None:
        if delta.persist.any():
            keep = np.flatnonzero(delta.persist)
            ids = rules.sensor_id[delta.index[keep]]
            await store.write_engine_state(conn, ids, delta.rows.take(keep))

    async def _record(
        self, conn: asyncpg.Connection, items: list[tuple[Subject, str, Transition]]
    ) -> None:
        if not items:
            return
        for _, name, _ in items:
            kind = name.split(":")[0]
            self.counters.by_rule[kind] = self.counters.by_rule.get(kind, 0) + 1
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
        if r["sensor_id"] not in position:
            continue  # a sensor no longer active
        i = position[r["sensor_id"]]
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
