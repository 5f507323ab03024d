"""The ISA-18.2 lifecycle of engine transitions: episodes, their events and notifications.

`record(conn, subjects, transitions)` runs inside the caller's transaction: it locks the open
episodes the transitions touch (so an operator's acknowledgement either happened before and is
seen, or waits), replays the transitions through the lifecycle in time order (`Lifecycle`,
pure), then writes the episodes, the events and one `pg_notify` per event. docs/alarms.md draws
the state diagram.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from alerting import store
from alerting.rules import Rule
from alerting.store import AlarmRow, EventRow
from alerting.transitions import Transition
from hazwatch.domain import Tier

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENGINE = "engine"


@dataclass(frozen=True, slots=True)
class Subject:
    """Who an alarm is about: a sensor (sensor rules) or an asset (votes)."""

    sensor_id: int | None
    sensor_key: str | None
    asset_id: int
    asset_key: str
    site_id: int
    site_key: str

    def key(self, rule: str) -> tuple[int | None, int, str]:
        return (self.sensor_id, self.asset_id if self.sensor_id is None else 0, rule)


Key = tuple[int | None, int, str]


def iso(ts_us: int) -> str:
    return (EPOCH + timedelta(microseconds=ts_us)).isoformat().replace("+00:00", "Z")


def suppressed(row: AlarmRow, ts_us: int) -> bool:
    return row.out_of_service or (row.shelved_us is not None and row.shelved_us > ts_us)


def payload(
    event_id: int, row: AlarmRow, subject: Subject, kind: str, ts_us: int, tier: int,
    value: float | None, actor: str | None = None,
) -> str:  # fmt: skip
    """The compact JSON notification of one event (well under pg_notify's 8000 bytes)."""
    body = {
        "event_id": event_id,
        "alarm_id": row.alarm_id,
        "sensor_id": subject.sensor_id,
        "sensor": subject.sensor_key,
        "asset": subject.asset_key,
        "site": subject.site_key,
        "rule": row.rule,
        "kind": kind,
        "tier": tier,
        "colour": Tier(tier).colour,
        "state": row.state,
        "ts": iso(ts_us),
        "value": None if value is None or value != value else value,
        "predicted": row.predicted,
        "suppressed": suppressed(row, ts_us),
    }
    if actor is not None:
        body["actor"] = actor
    return orjson.dumps(body).decode()


@dataclass(slots=True)
class _Planned:
    row: AlarmRow
    subject: Subject
    kind: str
    ts_us: int
    tier: int
    value: float | None
    details: dict[str, object]


class Lifecycle:
    """Replays transitions over the open episodes; pure (ids are filled in afterwards)."""

    def __init__(self, open_rows: Mapping[Key, AlarmRow]) -> None:
        self.open: dict[Key, AlarmRow] = dict(open_rows)
        self.touched: dict[int, AlarmRow] = {}  # id(row) -> row, existing and new
        self.events: list[_Planned] = []
        self.new_rows: list[AlarmRow] = []

    def apply(self, subject: Subject, rule: str, t: Transition) -> None:
        key = subject.key(rule)
        row = self.open.get(key)
        value = None if t.value != t.value else t.value
        if t.to_tier > 0 and (row is None or row.state == "cleared_unacked" or t.from_tier == 0):
            if row is None:
                row = self._open(key, subject, rule, t)
                self._event(row, subject, "raised", t, value, {})
                return
            if row.state == "cleared_unacked":
                row.state = "active_unacked"
                row.cleared_us = None
                row.tier = t.to_tier
                row.max_tier = max(row.max_tier, t.to_tier)
                row.value = value
                self._event(row, subject, "raised", t, value, {"reopened": True})
                return
            log.warning("engine raised %s %s while episode %d is %s; recorded as a tier move",
                        subject.sensor_key or subject.asset_key, rule, row.alarm_id, row.state)  # fmt: skip
        if row is None:
            log.warning("engine cleared %s %s with no open episode; ignored",
                        subject.sensor_key or subject.asset_key, rule)  # fmt: skip
            return
        if t.to_tier == 0:
            row.tier = 0
            row.value = value
            row.cleared_us = t.ts_us
            if row.state == "active_acked":
                row.state = "closed"
                row.closed_us = t.ts_us
                del self.open[key]
            else:
                row.state = "cleared_unacked"
            self._event(row, subject, "cleared", t, value, {"from": t.from_tier})
            return
        kind = "escalated" if t.to_tier > row.tier else "deescalated"
        row.tier = t.to_tier
        row.max_tier = max(row.max_tier, t.to_tier)
        row.value = value
        self._event(row, subject, kind, t, value, {"from": t.from_tier})

    def _open(self, key: Key, subject: Subject, rule: str, t: Transition) -> AlarmRow:
        row = AlarmRow(
            alarm_id=0,
            sensor_id=subject.sensor_id,
            asset_id=subject.asset_id,
            site_id=subject.site_id,
            rule=rule,
            state="active_unacked",
            tier=t.to_tier,
            max_tier=t.to_tier,
            predicted=t.predicted,
            value=None if t.value != t.value else t.value,
            message=f"{subject.sensor_key or subject.asset_key} {rule}",
            raised_us=t.ts_us,
            new=True,
        )
        self.open[key] = row
        self.new_rows.append(row)
        return row

    def _event(
        self, row: AlarmRow, subject: Subject, kind: str, t: Transition, value: float | None,
        details: dict[str, object],
    ) -> None:  # fmt: skip
        self.touched[id(row)] = row
        self.events.append(_Planned(row, subject, kind, t.ts_us, t.to_tier, value, details))


def _row(r: asyncpg.Record) -> AlarmRow:
    return AlarmRow(
        alarm_id=r["alarm_id"], sensor_id=r["sensor_id"], asset_id=r["asset_id"],
        site_id=r["site_id"], rule=r["rule"], state=r["state"], tier=r["tier"],
        max_tier=r["max_tier"], predicted=r["predicted"], value=None, message="",
        raised_us=r["raised_us"], shelved_us=r["shelved_us"],
        shelve_reason=r["shelve_reason"], out_of_service=r["out_of_service"],
    )  # fmt: skip


def _record_key(r: asyncpg.Record) -> Key:
    sensor_id = r["sensor_id"]
    return (sensor_id, r["asset_id"] if sensor_id is None else 0, r["rule"])


async def record(
    conn: asyncpg.Connection,
    transitions: Sequence[tuple[Subject, str, Transition]],
) -> list[EventRow]:
    """Apply engine transitions (subject, rule name, transition) to the episodes, in time
    order, and write episodes, events and notifications. Returns the events written."""
    if not transitions:
        return []
    ordered = sorted(transitions, key=lambda x: (x[2].ts_us, x[0].asset_id, x[1]))
    keys = {s.key(rule) for s, rule, _ in ordered}
    sensor_keys = [(k[0], k[2]) for k in keys if k[0] is not None]
    asset_keys = [(k[1], k[2]) for k in keys if k[0] is None]
    found = await store.lock_open_alarms(conn, sensor_keys, asset_keys)  # type: ignore[arg-type]
    life = Lifecycle({_record_key(r): _row(r) for r in found})
    existing = {id(row) for row in life.open.values()}
    for subject, rule, t in ordered:
        life.apply(subject, rule, t)
    if life.new_rows:
        await _inherit_suppression(conn, life.new_rows)
        ids = await store.next_ids(conn, "alarms_alarm_id_seq", len(life.new_rows))
        for row, alarm_id in zip(life.new_rows, ids, strict=True):
            row.alarm_id = alarm_id
    await store.update_alarms(conn, [r for k, r in life.touched.items() if k in existing])
    await store.insert_alarms(conn, life.new_rows)
    event_ids = await store.next_ids(conn, "alarm_events_event_id_seq", len(life.events))
    events = [
        EventRow(
            event_id=event_id,
            alarm_id=p.row.alarm_id,
            ts_us=p.ts_us,
            kind=p.kind,
            tier=p.tier,
            value=p.value,
            actor=ENGINE,
            comment=None,
            details=orjson.dumps(p.details).decode(),
            payload=payload(event_id, p.row, p.subject, p.kind, p.ts_us, p.tier, p.value),
        )
        for p, event_id in zip(life.events, event_ids, strict=True)
    ]
    await store.insert_events(conn, events)
    return events


async def _inherit_suppression(conn: asyncpg.Connection, rows: list[AlarmRow]) -> None:
    sensor_keys = [(r.sensor_id, r.rule) for r in rows if r.sensor_id is not None]
    asset_keys = [(r.asset_id, r.rule) for r in rows if r.sensor_id is None]
    previous = {
        _record_key(p): p
        for p in await store.previous_suppression(conn, sensor_keys, asset_keys)  # type: ignore[arg-type]
    }
    for row in rows:
        key = (row.sensor_id, row.asset_id if row.sensor_id is None else 0, row.rule)
        before = previous.get(key)
        if before is None:
            continue
        row.out_of_service = before["out_of_service"]
        if before["shelved_us"] is not None and before["shelved_us"] > row.raised_us:
            row.shelved_us = before["shelved_us"]
            row.shelve_reason = before["shelve_reason"]


def rule_name(rule: Rule, vote_name: str | None = None) -> str:
    return f"vote:{vote_name}" if rule is Rule.VOTE else rule.label
