"""Benchmark: the API's downsampled readings query over 30 days of 1 s data.

    python -m bench.api [--days 30] [--sensors 20] [--repeat 31] [--keep]

Builds its own database (dropped at the end): 30 days of 1 s readings for 20 sensors (51.8M
rows, generated in SQL with generate_series, two loaders in parallel, the unique index built
after the load) and their one-minute rollup (built in SQL as ingest would have kept it). Then it
times, in the same run:

- `p50_ms`: GET /api/v1/readings for one sensor over the 30 days at max_points=1000, through
  the real app in-process (authentication, the probe, the rollup query, JSON), median of
  `--repeat` runs;
- `raw_bucket_p50_ms`: the plain alternative on the same machine at the same moment: one
  `time_bucket` with min/max/avg over the raw rows of that sensor and range, at the same width.

The last line is one JSON object: {"p50_ms", "raw_bucket_p50_ms", "ratio", ...}; ratio is
p50_ms / raw_bucket_p50_ms (smaller is better). Target: p50_ms <= 50.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson

from api import accounts
from api.app import create_app
from api.auth import Role
from hazwatch.config import ApiSettings, DatabaseSettings, Settings
from hazwatch.migrate import migrate

END = datetime(2026, 11, 28, tzinfo=UTC)
MAX_POINTS = 1000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def registry(conn: asyncpg.Connection, sensors: int) -> list[int]:
    site = await conn.fetchval(
        "INSERT INTO sites (key, name) VALUES ('bench', 'Bench') RETURNING site_id"
    )
    asset = await conn.fetchval(
        """INSERT INTO assets (site_id, key, kind, name) VALUES ($1, 'gh', 'gas_holder', 'GH')
           RETURNING asset_id""",
        site,
    )
    device = await conn.fetchval(
        """INSERT INTO devices (site_id, asset_id, key, name, protocol)
           VALUES ($1, $2, 'det', 'Detectors', 'mqtt') RETURNING device_id""",
        site,
        asset,
    )
    rows = await conn.fetch(
        """INSERT INTO sensors (key, device_id, asset_id, channel, kind, unit, name, range_min,
                                range_max, period_s)
           SELECT 'det/co' || i, $1, $2, 'co' || i, 'co', 'ppm', 'CO ' || i, 0, 1000, 1
           FROM generate_series(1, $3) i RETURNING sensor_id""",
        device,
        asset,
        sensors,
    )
    return [r["sensor_id"] for r in rows]


# One sensor-day of 1 s readings: a daily wave, a fast ripple and a one-second spike at a place
# that depends on the sensor and the day, so that downsampling has something to keep.
_DAY_SQL = """
INSERT INTO readings (sensor_id, ts, value, quality)
SELECT $1::int, $2::timestamptz + make_interval(secs => s),
       10 + 5 * sin(s * 2 * pi() / 86400) + sin(s * 0.37 + $1::int)
          + CASE WHEN s = (($1::int * 7919 + $3::int) % 86400) THEN 400 ELSE 0 END,
       0
FROM generate_series(0, 86399) s
"""

_ROLLUP_SQL = """
INSERT INTO readings_1m (sensor_id, bucket, min, max, sum, count, bad_count, last_ts, last)
SELECT sensor_id, time_bucket('1 minute', ts), min(value), max(value), sum(value), count(value),
       count(*) FILTER (WHERE quality >= 64), max(ts), last(value, ts)
FROM readings
WHERE ts >= $1 AND ts < $2
GROUP BY 1, 2
"""


async def load(url: str, sensor_ids: list[int], days: int) -> int:
    """Readings for every sensor-day, two loaders in parallel; returns rows written."""
    start = END - timedelta(days=days)
    jobs = [(sid, d) for d in range(days) for sid in sensor_ids]
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    done = 0
    started = time.perf_counter()

    async def loader() -> None:
        nonlocal done
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET synchronous_commit = off")
            while not queue.empty():
                sid, day = queue.get_nowait()
                await conn.execute(_DAY_SQL, sid, start + timedelta(days=day), day)
                done += 1
                if done % 100 == 0:
                    rate = done * 86_400 / (time.perf_counter() - started)
                    log(f"  loaded {done}/{len(jobs)} sensor-days ({rate / 1e3:.0f}k rows/s)")
        finally:
            await conn.close()

    await asyncio.gather(loader(), loader())
    return len(jobs) * 86_400


async def build(url: str, sensor_ids: list[int], days: int) -> int:
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        await migrate(conn)
        ids = await registry(conn, len(sensor_ids))
        # The idempotency index is built after the load: far faster than maintaining it per row.
        await conn.execute("DROP INDEX readings_sensor_ts_key")
    finally:
        await conn.close()
    t = time.perf_counter()
    rows = await load(url, ids, days)
    log(f"loaded {rows:,} readings in {time.perf_counter() - t:.0f} s")
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        t = time.perf_counter()
        await conn.execute(
            "CREATE UNIQUE INDEX readings_sensor_ts_key ON readings (sensor_id, ts DESC)"
        )
        log(f"indexed in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        start = END - timedelta(days=days)
        for day in range(days):
            day_start = start + timedelta(days=day)
            await conn.execute(_ROLLUP_SQL, day_start, day_start + timedelta(days=1))
        log(f"rollup built in {time.perf_counter() - t:.0f} s")
        await conn.execute("VACUUM ANALYZE readings")
        await conn.execute("VACUUM ANALYZE readings_1m")
    finally:
        await conn.close()
    return rows


async def time_api(url: str, days: int, repeat: int) -> tuple[list[float], int]:
    conn = await asyncpg.connect(url)
    try:
        await accounts.create_user(conn, "bench", Role.VIEWER, None, actor="bench")
        _, secret = await accounts.create_token(
            conn, "bench", name="bench", expires_in=None, now=END, actor="bench"
        )
    finally:
        await conn.close()
    settings = Settings(database=DatabaseSettings(url=url), api=ApiSettings())
    app = create_app(settings, clock=lambda: END)
    params: dict[str, str | int] = {
        "sensor": "det/co1",
        "start": (END - timedelta(days=days)).isoformat(),
        "end": END.isoformat(),
        "max_points": MAX_POINTS,
    }
    times = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for i in range(repeat + 1):
                t = time.perf_counter()
                r = await client.get("/api/v1/readings", params=params, headers=headers)
                elapsed = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                if i:  # the first call warms the pool and the plan cache
                    times.append(elapsed)
            body = r.json()
    spike = max(p["max"] for p in body["points"])
    log(f"api: {len(body['points'])} points from {body['source']} at {body['bucket_s']} s, "
        f"highest max {spike:.1f}")  # fmt: skip
    assert body["source"] == "rollup"
    assert len(body["points"]) <= MAX_POINTS
    assert spike > 400, "the one-second spikes must survive downsampling"
    return times, int(body["bucket_s"])


async def time_raw_bucket(url: str, days: int, bucket_s: int, repeat: int) -> list[float]:
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        sid = await conn.fetchval("SELECT sensor_id FROM sensors WHERE key = 'det/co1'")
        times = []
        for i in range(repeat + 1):
            t = time.perf_counter()
            rows = await conn.fetch(
                """SELECT time_bucket(make_interval(secs => $4), ts) AS ts, min(value),
                          max(value), avg(value)
                   FROM readings WHERE sensor_id = $1 AND ts >= $2 AND ts < $3
                   GROUP BY 1 ORDER BY 1""",
                sid,
                END - timedelta(days=days),
                END,
                float(bucket_s),
            )
            if i:
                times.append((time.perf_counter() - t) * 1000)
        log(f"raw time_bucket: {len(rows)} buckets")
        return times
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    base = args.pg.rstrip("/")
    name = f"hw_bench_api_{uuid.uuid4().hex[:8]}"
    url = f"{base}/{name}"
    await create_database(f"{base}/postgres", name)
    try:
        log(f"database {name}: {args.days} days x {args.sensors} sensors of 1 s readings")
        started = time.perf_counter()
        rows = await build(url, list(range(args.sensors)), args.days)
        build_s = time.perf_counter() - started
        api_ms, bucket_s = await time_api(url, args.days, args.repeat)
        raw_ms = await time_raw_bucket(url, args.days, bucket_s, args.raw_repeat)
    finally:
        if args.keep:
            log(f"kept database {name}")
        else:
            await drop_database(f"{base}/postgres", name)
    p50 = statistics.median(api_ms)
    raw_p50 = statistics.median(raw_ms)
    return {
        "p50_ms": round(p50, 2),
        "p95_ms": round(statistics.quantiles(api_ms, n=20)[-1], 2),
        "raw_bucket_p50_ms": round(raw_p50, 2),
        "ratio": round(p50 / raw_p50, 4),
        "rows": rows,
        "sensors": args.sensors,
        "days": args.days,
        "max_points": MAX_POINTS,
        "bucket_s": bucket_s,
        "build_s": round(build_s, 1),
        "target_p50_ms": 50,
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=31, help="timed API calls")
    parser.add_argument("--raw-repeat", type=int, default=7, help="timed raw time_bucket runs")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


if __name__ == "__main__":
    result = asyncio.run(main(parse()))
    print(orjson.dumps(result).decode())
