"""Alarms: the filtered, paginated list, one alarm with its events, and the operator actions.

The actions are thin: in one transaction, check the user's site scope (an alarm outside it is
a 404, exactly as if it did not exist), then call the engine's `alerting.actions`, which locks
the row, checks the state, appends the event and notifies at commit. A refused action (double
acknowledge, unshelving an alarm that is not shelved) is a 409 and writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Query

from alerting import actions
from alerting.store import EventRow
from api.auth import Principal
from api.deps import (
    Acknowledger,
    Assigner,
    Commenter,
    Conn,
    Reader,
    ServicesDep,
    ServiceTaker,
    Shelver,
)
from api.errors import Conflict, NotFound
from api.params import (
    AlarmId,
    AssetFilter,
    SensorFilter,
    SiteFilter,
    Timestamp,
    clamp_time,
)
from api.routes import API_PREFIX
from api.schemas import (
    CONFLICT,
    NOT_FOUND,
    SECURED,
    AckBody,
    ActionDone,
    Alarm,
    AlarmDetail,
    AlarmEvent,
    AlarmPage,
    AlarmState,
    AssignBody,
    CommentBody,
    OutOfServiceBody,
    ShelveBody,
    UnshelveBody,
    finite,
)

router = APIRouter(prefix=f"{API_PREFIX}/alarms", tags=["alarms"], responses=SECURED)

Sort = Literal[
    "-raised_at", "raised_at", "-updated_at", "updated_at", "-tier", "tier", "-max_tier",
    "max_tier",
]  # fmt: skip
# The only text that enters ORDER BY: a fixed fragment per allowed sort key (RELIABILITY S7).
_ORDER: dict[str, str] = {
    "-raised_at": "a.raised_at DESC, a.alarm_id DESC",
    "raised_at": "a.raised_at ASC, a.alarm_id ASC",
    "-updated_at": "a.updated_at DESC, a.alarm_id DESC",
    "updated_at": "a.updated_at ASC, a.alarm_id ASC",
    "-tier": "a.tier DESC, a.raised_at DESC, a.alarm_id DESC",
    "tier": "a.tier ASC, a.raised_at DESC, a.alarm_id DESC",
    "-max_tier": "a.max_tier DESC, a.raised_at DESC, a.alarm_id DESC",
    "max_tier": "a.max_tier ASC, a.raised_at DESC, a.alarm_id DESC",
}

_COLUMNS = """
a.alarm_id, s.key AS site, t.key AS asset, n.key AS sensor, a.sensor_id, a.rule, a.state,
a.tier, a.max_tier, a.predicted, a.value, a.message, a.raised_at, a.cleared_at, a.acked_at,
a.acked_by, a.closed_at, a.shelved_until, a.shelve_reason, a.out_of_service,
(a.out_of_service OR COALESCE(a.shelved_until > $1, false)) AS suppressed, a.assignee,
a.updated_at
"""

_FROM = """
FROM alarms a
JOIN sites s ON s.site_id = a.site_id
JOIN assets t ON t.asset_id = a.asset_id
LEFT JOIN sensors n ON n.sensor_id = a.sensor_id  -- none for an asset's vote alarm
"""

# $1 now, $2 scope, $3 states, $4 tiers, $5 min max_tier, $6 site, $7 asset, $8 sensor,
# $9 since, $10 until, $11 assignee, $12 suppressed
_WHERE = """
WHERE ($2::text[] IS NULL OR s.key = ANY($2::text[]))
  AND ($3::text[] IS NULL OR a.state = ANY($3::text[]))
  AND ($4::int[] IS NULL OR a.tier = ANY($4::int[]))
  AND ($5::int IS NULL OR a.max_tier >= $5)
  AND ($6::text IS NULL OR s.key = $6)
  AND ($7::text IS NULL OR t.key = $7)
  AND ($8::text IS NULL OR n.key = $8)
  AND ($9::timestamptz IS NULL OR a.raised_at >= $9)
  AND ($10::timestamptz IS NULL OR a.raised_at < $10)
  AND ($11::text IS NULL OR a.assignee = $11)
  AND ($12::boolean IS NULL
       OR (a.out_of_service OR COALESCE(a.shelved_until > $1, false)) = $12)
"""

Tier = Annotated[int, Query(ge=0, le=4)]
OPEN_STATES = frozenset({"active_unacked", "active_acked", "cleared_unacked"})
PAGE_MAX = 500


def _alarm(r: asyncpg.Record) -> Alarm:
    data = dict(r)
    data["value"] = finite(data["value"])
    return Alarm(**data)


@router.get("", response_model=AlarmPage, summary="Alarms, filtered and paginated")
async def list_alarms(
    *,
    user: Reader,
    conn: Conn,
    svc: ServicesDep,
    state: Annotated[list[AlarmState] | None, Query(description="repeatable")] = None,
    open_only: Annotated[
        bool, Query(alias="open", description="only episodes that are not closed")
    ] = False,
    tier: Annotated[list[Tier] | None, Query(description="current tier; repeatable")] = None,
    min_tier: Annotated[int | None, Query(ge=1, le=4, description="highest tier reached")] = None,
    site: SiteFilter = None,
    asset: AssetFilter = None,
    sensor: SensorFilter = None,
    since: Annotated[Timestamp | None, Query(description="raised at or after")] = None,
    until: Annotated[Timestamp | None, Query(description="raised before")] = None,
    assignee: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")] = None,
    suppressed: Annotated[bool | None, Query(description="shelved or out of service")] = None,
    sort: Sort = "-raised_at",
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AlarmPage:
    since = None if since is None else clamp_time(since)
    until = None if until is None else clamp_time(until)
    states: list[str] | None = list(state) if state else None
    if open_only:
        wanted = sorted(OPEN_STATES) if states is None else states
        states = [s for s in wanted if s in OPEN_STATES]
    args: list[Any] = [
        svc.clock(), user.scope_param, states, list(tier) if tier else None, min_tier,
        site, asset, sensor, since, until, assignee, suppressed,
    ]  # fmt: skip
    total = await conn.fetchval(f"SELECT count(*) {_FROM} {_WHERE}", *args)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} {_FROM} {_WHERE} ORDER BY {_ORDER[sort]} LIMIT $13 OFFSET $14",
        *args,
        limit,
        offset,
    )
    end = offset + len(rows)
    return AlarmPage(
        items=[_alarm(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
        next_offset=end if end < total else None,
    )


@router.get(
    "/{alarm_id}",
    responses=NOT_FOUND,
    response_model=AlarmDetail,
    summary="One alarm with its events",
)
async def get_alarm(alarm_id: AlarmId, user: Reader, conn: Conn, svc: ServicesDep) -> AlarmDetail:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} {_FROM} WHERE a.alarm_id = $3 "
        "AND ($2::text[] IS NULL OR s.key = ANY($2::text[]))",
        svc.clock(),
        user.scope_param,
        alarm_id,
    )
    if row is None:
        raise NotFound(f"no alarm {alarm_id}")
    events = await conn.fetch(
        """SELECT event_id, ts, recorded_at, kind, tier, value, actor, comment,
                  details::text AS details
           FROM alarm_events WHERE alarm_id = $1 ORDER BY event_id""",
        alarm_id,
    )
    return AlarmDetail(
        **_alarm(row).model_dump(),
        events=[
            AlarmEvent(
                **{**dict(e), "value": finite(e["value"]), "details": orjson.loads(e["details"])}
            )
            for e in events
        ],
    )


async def _act(
    conn: asyncpg.Connection,
    user: Principal,
    alarm_id: int,
    action: Callable[[], Awaitable[EventRow]],
) -> ActionDone:
    """One transaction: the scope check, the action (alerting.actions locks the row, checks
    the state, appends the event and notifies at commit), and the state it left."""
    async with conn.transaction():
        site = await conn.fetchval(
            "SELECT s.key FROM alarms a JOIN sites s USING (site_id) WHERE a.alarm_id = $1",
            alarm_id,
        )
        if site is None or not user.sees(site):
            raise NotFound(f"no alarm {alarm_id}")
        event = await action()
        state = await conn.fetchval("SELECT state FROM alarms WHERE alarm_id = $1", alarm_id)
    return ActionDone(alarm_id=alarm_id, event_id=event.event_id, kind=event.kind, state=state)


@router.post(
    "/{alarm_id}/ack",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="Acknowledge, with a comment",
)
async def acknowledge(
    alarm_id: AlarmId, body: AckBody, user: Acknowledger, conn: Conn, svc: ServicesDep
) -> ActionDone:
    return await _act(
        conn, user, alarm_id,
        lambda: actions.acknowledge(
            conn, alarm_id, actor=user.name, at=svc.clock(), comment=body.comment
        ),
    )  # fmt: skip


@router.post(
    "/{alarm_id}/shelve",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="Shelve for a while, with a reason (notifications stop until it expires)",
)
async def shelve(
    alarm_id: AlarmId, body: ShelveBody, user: Shelver, conn: Conn, svc: ServicesDep
) -> ActionDone:
    duration = timedelta(seconds=body.duration_s)
    return await _act(
        conn, user, alarm_id,
        lambda: actions.shelve(
            conn, alarm_id, actor=user.name, at=svc.clock(), duration=duration,
            reason=body.reason,
        ),
    )  # fmt: skip


@router.post(
    "/{alarm_id}/unshelve",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="End a shelve early",
)
async def unshelve(
    alarm_id: AlarmId, body: UnshelveBody, user: Shelver, conn: Conn, svc: ServicesDep
) -> ActionDone:
    return await _act(
        conn, user, alarm_id,
        lambda: actions.unshelve(
            conn, alarm_id, actor=user.name, at=svc.clock(), comment=body.comment
        ),
    )  # fmt: skip


@router.post(
    "/{alarm_id}/comment",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="Add a comment",
)
async def comment(
    alarm_id: AlarmId, body: CommentBody, user: Commenter, conn: Conn, svc: ServicesDep
) -> ActionDone:
    return await _act(
        conn, user, alarm_id,
        lambda: actions.comment(conn, alarm_id, actor=user.name, at=svc.clock(), text=body.comment),
    )  # fmt: skip


@router.post(
    "/{alarm_id}/assign",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="Assign to a user (null takes it back)",
)
async def assign(
    alarm_id: AlarmId, body: AssignBody, user: Assigner, conn: Conn, svc: ServicesDep
) -> ActionDone:
    if body.assignee is not None:
        found = await conn.fetchrow(
            """SELECT u.site_scope, s.key AS site
               FROM users u, alarms a JOIN sites s USING (site_id)
               WHERE u.name = $1 AND NOT u.disabled AND a.alarm_id = $2""",
            body.assignee,
            alarm_id,
        )
        if found is None:
            raise NotFound(f"no active user {body.assignee!r} (or no alarm {alarm_id})")
        scope = found["site_scope"]
        if scope is not None and found["site"] not in scope and user.sees(found["site"]):
            raise Conflict(f"user {body.assignee!r} cannot see site {found['site']!r}")
    return await _act(
        conn, user, alarm_id,
        lambda: actions.assign(
            conn, alarm_id, actor=user.name, at=svc.clock(), assignee=body.assignee
        ),
    )  # fmt: skip


@router.post(
    "/{alarm_id}/out-of-service",
    responses=NOT_FOUND | CONFLICT,
    response_model=ActionDone,
    summary="Take out of service (maintenance, calibration) or return to service",
)
async def out_of_service(
    alarm_id: AlarmId, body: OutOfServiceBody, user: ServiceTaker, conn: Conn, svc: ServicesDep
) -> ActionDone:
    return await _act(
        conn, user, alarm_id,
        lambda: actions.set_out_of_service(
            conn, alarm_id, actor=user.name, at=svc.clock(), out=body.out_of_service,
            reason=body.reason,
        ),
    )  # fmt: skip
