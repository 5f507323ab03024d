"""Readings of one sensor over a time range, downsampled to at most `max_points` (api.downsample).

Every query has a sargable `ts` (or `bucket`) range on the hypertable, so TimescaleDB excludes
the chunks outside it. Unless the sensor's period says the range holds far more than
`max_points` readings, they are first counted up to `max_points + 1` (an index-only probe that
stops early): if they fit, they are returned raw; one more than fits means buckets. So a sensor
with gaps, or an event stream, still gets its raw readings when there are few, and a long range
of a periodic sensor does not pay for planning a probe over every chunk of the range.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query

from api.deps import Conn, Reader, ServicesDep
from api.downsample import Plan, plan
from api.errors import NotFound
from api.params import SENSOR_KEY_PATTERN, Timestamp, clamp_time
from api.routes import API_PREFIX
from api.schemas import NOT_FOUND, SECURED, Point, Readings, finite

# The most points a request may name; `api.max_points` may lower it (requests are clamped).
MAX_POINTS_CEILING = 10_000

router = APIRouter(prefix=API_PREFIX, tags=["readings"], responses=SECURED)

# Values that are not finite (NaN, +-inf) are left out of bucket aggregates; `x = x` is false
# only for NaN in IEEE terms, but PostgreSQL orders NaN above everything and calls it equal to
# itself, so the test is a range that excludes NaN and both infinities.
# Skip the probe when the period promises this many times max_points readings.
SKIP_PROBE_FACTOR = 4.0
_FINITE = "value BETWEEN '-1e308'::float8 AND '1e308'::float8"

_SENSOR = """
SELECT n.sensor_id, n.key, n.unit, n.period_s
FROM sensors n JOIN assets a ON a.asset_id = n.asset_id JOIN sites s ON s.site_id = a.site_id
WHERE ($1::text[] IS NULL OR s.key = ANY($1::text[])) AND n.key = $2
"""

PROBE_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM readings WHERE sensor_id = $1 AND ts >= $2 AND ts < $3 LIMIT $4
) probe
"""

RAW_SQL = """
SELECT ts, value, quality FROM readings
WHERE sensor_id = $1 AND ts >= $2 AND ts < $3
ORDER BY ts LIMIT $4
"""

RAW_BUCKETS_SQL = f"""
SELECT time_bucket(make_interval(secs => $4), ts) AS ts,
       avg(value) FILTER (WHERE {_FINITE}) AS value,
       min(value) FILTER (WHERE {_FINITE}) AS min,
       max(value) FILTER (WHERE {_FINITE}) AS max,
       count(value) FILTER (WHERE {_FINITE}) AS count,
       count(*) FILTER (WHERE quality >= 64) AS bad
FROM readings
WHERE sensor_id = $1 AND ts >= $2 AND ts < $3
GROUP BY 1 ORDER BY 1
"""  # noqa: S608 - a fixed fragment, parameters are bound

# The rollup holds whole minutes: the buckets touching [start, end) are read, so the first and
# last points may include readings up to a minute outside the range.
ROLLUP_SQL = """
SELECT time_bucket(make_interval(secs => $4), bucket) AS ts,
       sum(sum) / NULLIF(sum(count), 0) AS value,
       min(min) AS min,
       max(max) AS max,
       sum(count) AS count,
       sum(bad_count) AS bad
FROM readings_1m
WHERE sensor_id = $1 AND bucket >= time_bucket('1 minute', $2::timestamptz) AND bucket < $3
GROUP BY 1 ORDER BY 1
"""


def _raw_point(r: asyncpg.Record) -> Point:
    value = finite(r["value"])
    good = value is not None
    return Point(
        ts=r["ts"],
        value=value,
        min=value,
        max=value,
        count=int(good),
        bad=int(r["quality"] >= 64),
        quality=r["quality"],
    )


def _bucket_point(r: asyncpg.Record) -> Point:
    return Point(
        ts=r["ts"],
        value=finite(r["value"]),
        min=finite(r["min"]),
        max=finite(r["max"]),
        count=int(r["count"] or 0),
        bad=int(r["bad"] or 0),
        quality=None,
    )


async def query_points(
    conn: asyncpg.Connection,
    *,
    sensor_id: int,
    start: datetime,
    end: datetime,
    max_points: int,
    period_s: float | None,
) -> tuple[Plan, list[Point]]:
    """The points of one sensor in [start, end): raw if they fit, else min/max/mean buckets."""
    nominal = None if period_s is None else (end - start).total_seconds() / period_s
    if nominal is not None and nominal > SKIP_PROBE_FACTOR * max_points:
        count: int | None = None  # plainly too many: buckets
    else:
        count = await conn.fetchval(PROBE_SQL, sensor_id, start, end, max_points + 1)
    chosen = plan(start, end, max_points=max_points, expected_rows=count)
    if chosen.source == "raw":
        rows = await conn.fetch(RAW_SQL, sensor_id, start, end, max_points)
        return chosen, [_raw_point(r) for r in rows]
    sql = ROLLUP_SQL if chosen.source == "rollup" else RAW_BUCKETS_SQL
    rows = await conn.fetch(sql, sensor_id, start, end, float(chosen.bucket_s or 0))
    return chosen, [_bucket_point(r) for r in rows]


@router.get(
    "/readings",
    responses=NOT_FOUND,
    response_model=Readings,
    summary="Readings of one sensor over a range, downsampled to at most max_points",
    description=(
        "The range is [start, end); end defaults to now and start to 24 hours before end. "
        "A range is cut to the last `api.max_range_days` before its end and to the years "
        "1970-2200, and max_points to `api.max_points`; the answer's start, end and bucket_s "
        "say what was used. An empty range (end <= start) has no points. When the range holds "
        "more than max_points readings, each point is a time bucket with the mean, min and max "
        "of its readings, so a single-sample spike stays visible."
    ),
)
async def readings(
    *,
    user: Reader,
    conn: Conn,
    svc: ServicesDep,
    sensor: Annotated[str, Query(pattern=SENSOR_KEY_PATTERN, max_length=130)],
    start: Annotated[Timestamp | None, Query(description="RFC 3339; default end - 24 h")] = None,
    end: Annotated[Timestamp | None, Query(description="RFC 3339; default now")] = None,
    max_points: Annotated[
        int | None, Query(ge=10, le=MAX_POINTS_CEILING, description="default from settings")
    ] = None,
) -> Readings:
    settings = svc.settings.api
    points_wanted = min(settings.default_points if max_points is None else max_points,
                        settings.max_points)  # fmt: skip
    end = clamp_time(end or svc.clock())
    start = clamp_time(start or end - timedelta(hours=24))
    start = max(start, end - timedelta(days=settings.max_range_days))
    row = await conn.fetchrow(_SENSOR, user.scope_param, sensor)
    if row is None:
        raise NotFound(f"no sensor {sensor}")
    points: list[Point] = []
    chosen = Plan("raw", None)
    if start < end:
        chosen, points = await query_points(
            conn,
            sensor_id=row["sensor_id"],
            start=start,
            end=end,
            max_points=points_wanted,
            period_s=row["period_s"],
        )
    return Readings(
        sensor_id=row["sensor_id"],
        sensor=row["key"],
        unit=row["unit"],
        start=start,
        end=end,
        source=chosen.source,
        bucket_s=chosen.bucket_s,
        max_points=points_wanted,
        points=points,
    )
