"""Operator actions on an alarm: acknowledge, shelve, unshelve, out-of-service, comment, assign.

Each action is one transaction: it locks the alarm row (SELECT ... FOR UPDATE), checks that the
action fits the alarm's state, updates the row, appends exactly one `alarm_events` row and
notifies channel `hazwatch_alarm_events` (delivered on commit). Two concurrent acknowledgements
of one alarm are serialised by the row lock: the first wins, the second finds the alarm already
acknowledged and is refused with `AlarmActionRefused`, writing nothing.

ISA-18.2 transitions of an acknowledgement: active_unacked -> active_acked, and
cleared_unacked -> closed. The engine owns every other transition (raise, tier moves, clear).

Callers pass the time (`now`), so tests control it; the event's `ts` is that time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from hazwatch.errors import AlarmActionRefused, AlarmNotFound

CHANNEL = "hazwatch_alarm_events"
OPEN_STATES = frozenset({"active_unacked", "active_acked", "cleared_unacked"})

_LOCK_SQL = """
SELECT a.alarm_id, a.state, a.tier, a.max_tier, a.value, a.rule, a.shelved_until,
       a.out_of_service, a.assignee, a.predicted,
       s.key AS site, t.key AS asset, n.key AS sensor
FROM alarms a
JOIN sites s ON s.site_id = a.site_id
JOIN assets t ON t.asset_id = a.asset_id
JOIN sensors n ON n.sensor_id = a.sensor_id
WHERE a.alarm_id = $1
FOR UPDATE OF a
"""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: the event it appended and the alarm's state after it."""

    alarm_id: int
    event_id: int
    kind: str
    state: str


def event_payload(
    alarm: Mapping[str, Any],
    *,
    event_id: int,
    kind: str,
    ts: datetime,
    actor: str | None,
    comment: str | None,
    suppressed: bool,
) -> dict[str, Any]:
    """The JSON object sent with pg_notify on `hazwatch_alarm_events` (kept well under the
    8,000-byte NOTIFY limit: no free text longer than 1,000 characters)."""
    return {
        "event_id": event_id,
        "alarm_id": alarm["alarm_id"],
        "kind": kind,
        "ts": ts.isoformat(),
        "site": alarm["site"],
        "asset": alarm["asset"],
        "sensor": alarm["sensor"],
        "rule": alarm["rule"],
        "state": alarm["state"],
        "tier": alarm["tier"],
        "max_tier": alarm["max_tier"],
        "predicted": alarm["predicted"],
        "actor": actor,
        "comment": None if comment is None else comment[:1000],
        "suppressed": suppressed,
    }


def is_suppressed(alarm: Mapping[str, Any], now: datetime) -> bool:
    """Shelved (until a time still ahead) or out of service: recorded, but nobody is notified."""
    until = alarm["shelved_until"]
    return bool(alarm["out_of_service"]) or (until is not None and until > now)


async def record_event(
    conn: asyncpg.Connection,
    alarm: Mapping[str, Any],
    *,
    kind: str,
    now: datetime,
    actor: str | None,
    comment: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one event for `alarm` (its state after the change) and notify; returns event_id.
    Must run inside the caller's transaction, so the event commits with the change."""
    event_id: int = await conn.fetchval(
        """INSERT INTO alarm_events (alarm_id, ts, kind, tier, value, actor, comment, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) RETURNING event_id""",
        alarm["alarm_id"],
        now,
        kind,
        alarm["tier"],
        alarm["value"],
        actor,
        comment,
        orjson.dumps(dict(details or {})).decode(),
    )
    payload = event_payload(
        alarm,
        event_id=event_id,
        kind=kind,
        ts=now,
        actor=actor,
        comment=comment,
        suppressed=is_suppressed(alarm, now),
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, orjson.dumps(payload).decode())
    return event_id


async def _lock(conn: asyncpg.Connection, alarm_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(_LOCK_SQL, alarm_id)
    if row is None:
        raise AlarmNotFound(alarm_id)
    return dict(row)


def _require_open(alarm: Mapping[str, Any], action: str) -> None:
    if alarm["state"] not in OPEN_STATES:
        raise AlarmActionRefused(f"alarm {alarm['alarm_id']} is closed: cannot {action} it")


async def acknowledge(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, comment: str | None, now: datetime
) -> ActionResult:
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        state = alarm["state"]
        if state == "active_unacked":
            new_state, closed_at = "active_acked", None
        elif state == "cleared_unacked":
            new_state, closed_at = "closed", now
        else:
            raise AlarmActionRefused(f"alarm {alarm_id} is already acknowledged (state {state})")
        await conn.execute(
            """UPDATE alarms SET state = $2, acked_at = $3, acked_by = $4,
                      closed_at = COALESCE($5, closed_at), updated_at = $3
               WHERE alarm_id = $1""",
            alarm_id,
            new_state,
            now,
            actor,
            closed_at,
        )
        alarm["state"] = new_state
        event_id = await record_event(
            conn,
            alarm,
            kind="acknowledged",
            now=now,
            actor=actor,
            comment=comment,
            details={"from_state": state, "closed": new_state == "closed"},
        )
    return ActionResult(alarm_id, event_id, "acknowledged", new_state)


async def shelve(
    conn: asyncpg.Connection,
    alarm_id: int,
    *,
    actor: str,
    duration: timedelta,
    reason: str,
    now: datetime,
) -> ActionResult:
    """Suppress notifications until now + duration (a new shelve replaces the expiry)."""
    if duration <= timedelta(0):
        raise AlarmActionRefused("a shelve duration must be positive")
    until = now + duration
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        _require_open(alarm, "shelve")
        await conn.execute(
            """UPDATE alarms SET shelved_until = $2, shelve_reason = $3, updated_at = $4
               WHERE alarm_id = $1""",
            alarm_id,
            until,
            reason,
            now,
        )
        alarm["shelved_until"] = until
        event_id = await record_event(
            conn,
            alarm,
            kind="shelved",
            now=now,
            actor=actor,
            comment=reason,
            details={"until": until.isoformat(), "duration_s": duration.total_seconds()},
        )
    return ActionResult(alarm_id, event_id, "shelved", alarm["state"])


async def unshelve(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, comment: str | None, now: datetime
) -> ActionResult:
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        until = alarm["shelved_until"]
        if until is None or until <= now:
            raise AlarmActionRefused(f"alarm {alarm_id} is not shelved")
        await conn.execute(
            """UPDATE alarms SET shelved_until = NULL, shelve_reason = NULL, updated_at = $2
               WHERE alarm_id = $1""",
            alarm_id,
            now,
        )
        alarm["shelved_until"] = None
        event_id = await record_event(
            conn, alarm, kind="unshelved", now=now, actor=actor, comment=comment
        )
    return ActionResult(alarm_id, event_id, "unshelved", alarm["state"])


async def set_out_of_service(
    conn: asyncpg.Connection,
    alarm_id: int,
    *,
    actor: str,
    out_of_service: bool,
    reason: str,
    now: datetime,
) -> ActionResult:
    """Take an alarm out of service (maintenance, calibration) or return it to service."""
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        if out_of_service:
            _require_open(alarm, "take out of service")
        if alarm["out_of_service"] == out_of_service:
            where = "out of" if out_of_service else "in"
            raise AlarmActionRefused(f"alarm {alarm_id} is already {where} service")
        await conn.execute(
            "UPDATE alarms SET out_of_service = $2, updated_at = $3 WHERE alarm_id = $1",
            alarm_id,
            out_of_service,
            now,
        )
        alarm["out_of_service"] = out_of_service
        kind = "out_of_service" if out_of_service else "returned_to_service"
        event_id = await record_event(conn, alarm, kind=kind, now=now, actor=actor, comment=reason)
    return ActionResult(alarm_id, event_id, kind, alarm["state"])


async def comment(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, text: str, now: datetime
) -> ActionResult:
    """A note on the alarm's record; allowed on closed alarms too (post-incident notes)."""
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        event_id = await record_event(
            conn, alarm, kind="commented", now=now, actor=actor, comment=text
        )
    return ActionResult(alarm_id, event_id, "commented", alarm["state"])


async def assign(
    conn: asyncpg.Connection,
    alarm_id: int,
    *,
    actor: str,
    assignee: str | None,
    now: datetime,
) -> ActionResult:
    """Give the alarm to a person (None takes it back)."""
    async with conn.transaction():
        alarm = await _lock(conn, alarm_id)
        _require_open(alarm, "assign")
        previous = alarm["assignee"]
        await conn.execute(
            "UPDATE alarms SET assignee = $2, updated_at = $3 WHERE alarm_id = $1",
            alarm_id,
            assignee,
            now,
        )
        alarm["assignee"] = assignee
        event_id = await record_event(
            conn,
            alarm,
            kind="assigned",
            now=now,
            actor=actor,
            details={"assignee": assignee, "previous": previous},
        )
    return ActionResult(alarm_id, event_id, "assigned", alarm["state"])
