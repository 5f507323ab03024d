"""Operator actions on one alarm: acknowledge, shelve, unshelve, out of service, in service,
comment, assign. Each locks the alarm row, checks the state, updates it and appends one event
(with its notification) in the caller's transaction; a refused action writes nothing.

Two operators acknowledging at once: the second waits for the first's row lock, then sees the
alarm acknowledged and is refused, so there is exactly one `acknowledged` event.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import orjson

from alerting import store
from alerting.store import AlarmRow, EventRow
from alerting.tracker import Subject, iso, payload
from hazwatch.errors import AlarmActionRefused, AlarmNotFound

_SELECT = """SELECT a.alarm_id, a.sensor_id, a.asset_id, a.site_id, a.rule, a.state, a.tier,
        a.max_tier, a.predicted, a.value, a.out_of_service, a.shelve_reason,
        hazwatch_ts_to_us(a.raised_at) AS raised_us,
        hazwatch_ts_to_us(a.shelved_until) AS shelved_us,
        n.key AS sensor_key, x.key AS asset_key, s.key AS site_key
    FROM alarms a
    JOIN assets x ON x.asset_id = a.asset_id
    JOIN sites s ON s.site_id = a.site_id
    LEFT JOIN sensors n ON n.sensor_id = a.sensor_id
    WHERE a.alarm_id = $1
    FOR UPDATE OF a"""


def _us(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=at.tzinfo)) // timedelta(microseconds=1)


async def _lock(conn: asyncpg.Connection, alarm_id: int) -> tuple[AlarmRow, Subject]:
    r = await conn.fetchrow(_SELECT, alarm_id)
    if r is None:
        raise AlarmNotFound(f"no alarm {alarm_id}")
    row = AlarmRow(
        alarm_id=r["alarm_id"], sensor_id=r["sensor_id"], asset_id=r["asset_id"],
        site_id=r["site_id"], rule=r["rule"], state=r["state"], tier=r["tier"],
        max_tier=r["max_tier"], predicted=r["predicted"], value=r["value"], message="",
        raised_us=r["raised_us"], shelved_us=r["shelved_us"],
        shelve_reason=r["shelve_reason"], out_of_service=r["out_of_service"],
    )  # fmt: skip
    subject = Subject(r["sensor_id"], r["sensor_key"], r["asset_id"], r["asset_key"],
                      r["site_id"], r["site_key"])  # fmt: skip
    return row, subject


async def _event(
    conn: asyncpg.Connection, row: AlarmRow, subject: Subject, kind: str, at: datetime,
    actor: str, comment: str | None, details: dict[str, object],
) -> EventRow:  # fmt: skip
    (event_id,) = await store.next_ids(conn, "alarm_events_event_id_seq", 1)
    ts_us = _us(at)
    event = EventRow(
        event_id=event_id,
        alarm_id=row.alarm_id,
        ts_us=ts_us,
        kind=kind,
        tier=row.tier,
        value=row.value,
        actor=actor,
        comment=comment,
        details=orjson.dumps(details).decode(),
        payload=payload(event_id, row, subject, kind, ts_us, row.tier, row.value, actor),
    )
    await store.insert_events(conn, [event])
    return event


async def acknowledge(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, comment: str | None = None
) -> EventRow:
    """active_unacked -> active_acked; cleared_unacked -> closed. Anything else is refused."""
    row, subject = await _lock(conn, alarm_id)
    if row.state == "active_unacked":
        row.state = "active_acked"
    elif row.state == "cleared_unacked":
        row.state = "closed"
    else:
        raise AlarmActionRefused(f"alarm {alarm_id} is {row.state}: nothing to acknowledge")
    await conn.execute(
        """UPDATE alarms SET state = $2::text, acked_at = $3::timestamptz, acked_by = $4,
               closed_at = CASE WHEN $2::text = 'closed' THEN $3::timestamptz END,
               updated_at = now()
           WHERE alarm_id = $1""",
        alarm_id, row.state, at, actor,
    )  # fmt: skip
    return await _event(conn, row, subject, "acknowledged", at, actor, comment, {})


async def shelve(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, duration: timedelta,
    reason: str,
) -> EventRow:  # fmt: skip
    """Suppress the alarm's notifications until `at + duration`; it keeps being recorded."""
    if duration <= timedelta(0):
        raise AlarmActionRefused("a shelve needs a positive duration")
    if not reason.strip():
        raise AlarmActionRefused("a shelve needs a reason")
    row, subject = await _lock(conn, alarm_id)
    if row.state == "closed":
        raise AlarmActionRefused(f"alarm {alarm_id} is closed: nothing to shelve")
    until = at + duration
    await conn.execute(
        """UPDATE alarms SET shelved_until = $2, shelve_reason = $3, updated_at = now()
           WHERE alarm_id = $1""",
        alarm_id, until, reason,
    )  # fmt: skip
    row.shelved_us = _us(until)
    return await _event(
        conn, row, subject, "shelved", at, actor, reason, {"until": iso(_us(until))}
    )


async def unshelve(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, comment: str | None = None
) -> EventRow:
    row, subject = await _lock(conn, alarm_id)
    if row.shelved_us is None:
        raise AlarmActionRefused(f"alarm {alarm_id} is not shelved")
    await conn.execute(
        "UPDATE alarms SET shelved_until = NULL, shelve_reason = NULL, updated_at = now() "
        "WHERE alarm_id = $1",
        alarm_id,
    )
    row.shelved_us = None
    return await _event(conn, row, subject, "unshelved", at, actor, comment, {})


async def set_out_of_service(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, out: bool, reason: str
) -> EventRow:
    """Out of service (maintenance, calibration) or back in service."""
    row, subject = await _lock(conn, alarm_id)
    if row.out_of_service == out:
        state = "out of service" if out else "in service"
        raise AlarmActionRefused(f"alarm {alarm_id} is already {state}")
    await conn.execute(
        "UPDATE alarms SET out_of_service = $2, updated_at = now() WHERE alarm_id = $1",
        alarm_id, out,
    )  # fmt: skip
    row.out_of_service = out
    kind = "out_of_service" if out else "in_service"
    return await _event(conn, row, subject, kind, at, actor, reason, {})


async def comment(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, text: str
) -> EventRow:
    if not text.strip():
        raise AlarmActionRefused("a comment needs text")
    row, subject = await _lock(conn, alarm_id)
    return await _event(conn, row, subject, "commented", at, actor, text, {})


async def assign(
    conn: asyncpg.Connection, alarm_id: int, *, actor: str, at: datetime, assignee: str | None
) -> EventRow:
    row, subject = await _lock(conn, alarm_id)
    await conn.execute(
        "UPDATE alarms SET assignee = $2, updated_at = now() WHERE alarm_id = $1",
        alarm_id, assignee,
    )  # fmt: skip
    return await _event(conn, row, subject, "assigned", at, actor, None, {"assignee": assignee})


async def expire_shelves(conn: asyncpg.Connection, *, at: datetime) -> list[EventRow]:
    """Unshelve every alarm whose shelve ran out (the service's tick calls this)."""
    ids = await conn.fetch(
        "SELECT alarm_id FROM alarms WHERE shelved_until <= $1 ORDER BY alarm_id", at
    )
    events = []
    for r in ids:
        row, subject = await _lock(conn, r["alarm_id"])
        if row.shelved_us is None or row.shelved_us > _us(at):
            continue  # unshelved or re-shelved meanwhile
        await conn.execute(
            "UPDATE alarms SET shelved_until = NULL, shelve_reason = NULL, updated_at = now() "
            "WHERE alarm_id = $1",
            row.alarm_id,
        )
        row.shelved_us = None
        events.append(
            await _event(conn, row, subject, "unshelved", at, "system", "shelve expired", {})
        )
    return events
