"""SQL of the alarm side: episodes, append-only events with their notifications, the engine's
persisted latches, derived readings, and the queries a restart rebuilds from.

Every function takes the connection of the caller's transaction; nothing here commits. Bulk
writes go through `unnest` of arrays, one statement per table per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from alerting.state import Rows
from hazwatch.domain import ReadingBatch

CHANNEL = "hazwatch_alarm_events"
OPEN_COLUMNS = """alarm_id, sensor_id, asset_id, site_id, rule, state, tier, max_tier, predicted,
    hazwatch_ts_to_us(raised_at) AS raised_us, hazwatch_ts_to_us(shelved_until) AS shelved_us,
    shelve_reason, out_of_service"""


async def next_ids(conn: asyncpg.Connection, sequence: str, count: int) -> list[int]:
    if count == 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval($1::regclass) AS id FROM generate_series(1, $2)", sequence, count
    )
    return [r["id"] for r in rows]


async def lock_open_alarms(
    conn: asyncpg.Connection,
    sensor_keys: Sequence[tuple[int, str]],
    asset_keys: Sequence[tuple[int, str]],
) -> list[asyncpg.Record]:
    """The open episodes of these (sensor, rule) and (asset, vote rule) keys, row-locked so
    an operator's concurrent action waits for this transaction (and sees its result)."""
    if not sensor_keys and not asset_keys:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {OPEN_COLUMNS} FROM alarms
            WHERE state <> 'closed' AND (
                (sensor_id, rule) IN (SELECT * FROM unnest($1::int[], $2::text[]))
                OR (sensor_id IS NULL AND (asset_id, rule) IN
                    (SELECT * FROM unnest($3::int[], $4::text[]))))
            ORDER BY alarm_id FOR UPDATE""",  # noqa: S608 - constant column list
        [k[0] for k in sensor_keys], [k[1] for k in sensor_keys],
        [k[0] for k in asset_keys], [k[1] for k in asset_keys],
    )  # fmt: skip
    return rows


async def previous_suppression(
    conn: asyncpg.Connection,
    sensor_keys: Sequence[tuple[int, str]],
    asset_keys: Sequence[tuple[int, str]],
) -> list[asyncpg.Record]:
    """The latest closed episode of each key: a new episode inherits its unexpired shelve and
    its out-of-service flag."""
    if not sensor_keys and not asset_keys:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT DISTINCT ON (sensor_id, asset_id, rule) sensor_id, asset_id, rule,
                  hazwatch_ts_to_us(shelved_until) AS shelved_us, shelve_reason, out_of_service
           FROM alarms
           WHERE state = 'closed' AND (
               (sensor_id, rule) IN (SELECT * FROM unnest($1::int[], $2::text[]))
               OR (sensor_id IS NULL AND (asset_id, rule) IN
                   (SELECT * FROM unnest($3::int[], $4::text[]))))
             AND (shelved_until IS NOT NULL OR out_of_service)
           ORDER BY sensor_id, asset_id, rule, alarm_id DESC""",
        [k[0] for k in sensor_keys], [k[1] for k in sensor_keys],
        [k[0] for k in asset_keys], [k[1] for k in asset_keys],
    )  # fmt: skip
    return rows


@dataclass(slots=True)
class AlarmRow:
    """An episode as the tracker leaves it after a batch."""

    alarm_id: int
    sensor_id: int | None
    asset_id: int
    site_id: int
    rule: str
    state: str
    tier: int
    max_tier: int
    predicted: bool
    value: float | None
    message: str
    raised_us: int
    cleared_us: int | None = None
    closed_us: int | None = None
    shelved_us: int | None = None
    shelve_reason: str | None = None
    out_of_service: bool = False
    new: bool = False


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or value != value else value


async def insert_alarms(conn: asyncpg.Connection, rows: Sequence[AlarmRow]) -> None:
    if not rows:
        return
    await conn.execute(
        """INSERT INTO alarms (alarm_id, sensor_id, asset_id, site_id, rule, state, tier,
               max_tier, predicted, value, message, raised_at, cleared_at, closed_at,
               shelved_until, shelve_reason, out_of_service)
           SELECT a, s, asset, site, rule, state, tier, max_tier, predicted, value, message,
                  hazwatch_us_to_ts(raised), hazwatch_us_to_ts(cleared),
                  hazwatch_us_to_ts(closed), hazwatch_us_to_ts(shelved), reason, oos
           FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::text[], $6::text[],
                       $7::int2[], $8::int2[], $9::bool[], $10::float8[], $11::text[],
                       $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
                       $16::text[], $17::bool[])
                AS t(a, s, asset, site, rule, state, tier, max_tier, predicted, value, message,
                     raised, cleared, closed, shelved, reason, oos)""",
        *_columns(rows, "alarm_id", "sensor_id", "asset_id", "site_id", "rule", "state", "tier",
                  "max_tier", "predicted", "value", "message", "raised_us", "cleared_us",
                  "closed_us", "shelved_us", "shelve_reason", "out_of_service"),
    )  # fmt: skip


async def update_alarms(conn: asyncpg.Connection, rows: Sequence[AlarmRow]) -> None:
    if not rows:
        return
    await conn.execute(
        """UPDATE alarms SET state = t.state, tier = t.tier, max_tier = t.max_tier,
               value = t.value, cleared_at = hazwatch_us_to_ts(t.cleared),
               closed_at = hazwatch_us_to_ts(t.closed), updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::int2[], $4::int2[], $5::float8[],
                       $6::bigint[], $7::bigint[])
                AS t(alarm_id, state, tier, max_tier, value, cleared, closed)
           WHERE alarms.alarm_id = t.alarm_id""",
        *_columns(rows, "alarm_id", "state", "tier", "max_tier", "value", "cleared_us",
                  "closed_us"),
    )  # fmt: skip


def _columns(rows: Sequence[AlarmRow], *names: str) -> list[list[Any]]:
    out = []
    for name in names:
        column = [getattr(r, name) for r in rows]
        out.append([_nan_to_none(v) for v in column] if name == "value" else column)
    return out


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: int
    alarm_id: int
    ts_us: int
    kind: str
    tier: int
    value: float | None
    actor: str
    comment: str | None
    details: str  # JSON
    payload: str  # JSON of the notification


async def insert_events(conn: asyncpg.Connection, events: Sequence[EventRow]) -> None:
    """Append events and send one notification each, in the caller's transaction (listeners
    hear them at commit, in order)."""
    if not events:
        return
    await conn.execute(
        """INSERT INTO alarm_events (event_id, alarm_id, ts, kind, tier, value, actor, comment,
               details)
           SELECT e, a, hazwatch_us_to_ts(ts), kind, tier, value, actor, comment, details::jsonb
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::int2[],
                       $6::float8[], $7::text[], $8::text[], $9::text[])
                AS t(e, a, ts, kind, tier, value, actor, comment, details)""",
        [e.event_id for e in events], [e.alarm_id for e in events],
        [e.ts_us for e in events], [e.kind for e in events], [e.tier for e in events],
        [_nan_to_none(e.value) for e in events], [e.actor for e in events],
        [e.comment for e in events], [e.details for e in events],
    )  # fmt: skip
    await conn.execute(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i",
        CHANNEL,
        [e.payload for e in events],
    )


# The engine's latches ----------------------------------------------------------------------


def _bits(flags: npt.NDArray[np.bool_]) -> list[int]:
    weights = 1 << np.arange(flags.shape[1], dtype=np.int64)
    return [int(v) for v in (flags.astype(np.int64) * weights).sum(axis=1)]


async def write_engine_state(
    conn: asyncpg.Connection, sensor_ids: npt.NDArray[np.int32], rows: Rows
) -> None:
    """Upsert the persisted part of these sensors' state."""
    if not len(sensor_ids):
        return
    await conn.execute(
        """INSERT INTO alarm_engine_state AS s (sensor_id, state_ts_us, raw, delayed, since_us,
               tiers, member_ts_us, updated_at)
           SELECT ids[i], clock[i], raw[i], delayed[i], since[(i - 1) * 8 + 1 : i * 8],
                  tiers[(i - 1) * 6 + 1 : i * 6], member[i], now()
           FROM (SELECT $1::int[] AS ids, $2::bigint[] AS clock, $3::int2[] AS raw,
                        $4::int2[] AS delayed, $5::bigint[] AS since, $6::int2[] AS tiers,
                        $7::bigint[] AS member) AS a,
                generate_subscripts($1::int[], 1) AS i
           ON CONFLICT (sensor_id) DO UPDATE SET state_ts_us = excluded.state_ts_us,
               raw = excluded.raw, delayed = excluded.delayed, since_us = excluded.since_us,
               tiers = excluded.tiers, member_ts_us = excluded.member_ts_us,
               updated_at = excluded.updated_at""",
        sensor_ids.tolist(), rows.eval_ts.tolist(), _bits(rows.raw), _bits(rows.delayed),
        rows.since.ravel().tolist(), rows.tier.ravel().tolist(), rows.member_ts.tolist(),
    )  # fmt: skip


async def load_engine_state(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT sensor_id, state_ts_us, raw, delayed, since_us, tiers, member_ts_us
           FROM alarm_engine_state"""
    )
    return rows


# Readings: derived ones written, recent ones read back at start ----------------------------


async def insert_derived(conn: asyncpg.Connection, batch: ReadingBatch) -> None:
    """Store readings of derived sensors (a replayed batch finds them already there)."""
    if not len(batch):
        return
    args = (batch.sensor_id.tolist(), batch.ts_us.tolist(), batch.value.tolist(),
            batch.quality.tolist())  # fmt: skip
    await conn.execute(
        """INSERT INTO readings (sensor_id, ts, value, quality)
           SELECT s, hazwatch_us_to_ts(t), v, q
           FROM unnest($1::int[], $2::bigint[], $3::float8[], $4::int2[]) AS r(s, t, v, q)
           ON CONFLICT DO NOTHING""",
        *args,
    )
    await conn.execute(
        """INSERT INTO latest AS l (sensor_id, ts, value, quality)
           SELECT DISTINCT ON (s) s, hazwatch_us_to_ts(t), v, q
           FROM unnest($1::int[], $2::bigint[], $3::float8[], $4::int2[]) AS r(s, t, v, q)
           ORDER BY s, t DESC
           ON CONFLICT (sensor_id) DO UPDATE SET ts = excluded.ts, value = excluded.value,
               quality = excluded.quality
           WHERE l.ts < excluded.ts""",
        *args,
    )


_VALID = "quality < 64 AND quality NOT IN (16, 17) AND value IS NOT NULL AND value = value"


async def last_readings(
    conn: asyncpg.Connection, sensor_ids: Sequence[int]
) -> list[asyncpg.Record]:
    """Per sensor: the latest stored reading's time, and the latest valid value."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT s.sensor_id, hazwatch_ts_to_us(l.ts) AS last_us, v.value AS last_valid
            FROM unnest($1::int[]) AS s(sensor_id)
            LEFT JOIN LATERAL (SELECT ts FROM readings r WHERE r.sensor_id = s.sensor_id
                               ORDER BY ts DESC LIMIT 1) l ON true
            LEFT JOIN LATERAL (SELECT value FROM readings r WHERE r.sensor_id = s.sensor_id
                               AND {_VALID} ORDER BY ts DESC LIMIT 1) v ON true""",  # noqa: S608
        list(sensor_ids),
    )
    return rows


async def recent_valid(
    conn: asyncpg.Connection, sensor_ids: Sequence[int], after_us: Sequence[int], limit: int
) -> list[asyncpg.Record]:
    """Per sensor: up to `limit` latest valid readings newer than its `after_us`, newest
    first (the engine's remembered history)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT s.sensor_id, hazwatch_ts_to_us(r.ts) AS ts_us, r.value
            FROM unnest($1::int[], $2::bigint[]) AS s(sensor_id, after_us)
            CROSS JOIN LATERAL (
                SELECT ts, value FROM readings r WHERE r.sensor_id = s.sensor_id
                  AND r.ts > hazwatch_us_to_ts(s.after_us) AND {_VALID}
                ORDER BY ts DESC LIMIT $3) r""",  # noqa: S608
        list(sensor_ids), list(after_us), limit,
    )  # fmt: skip
    return rows
