"""Readings over a range: raw when they fit, buckets otherwise, spikes kept, NaN rendered null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from api.downsample import bucket_width_s, plan
from tests.api.conftest import T0, Api

pytestmark = pytest.mark.integration

ROLLUP_SQL = """
INSERT INTO readings_1m (sensor_id, bucket, min, max, sum, count, bad_count, last_ts, last)
SELECT sensor_id, time_bucket('1 minute', ts), min(value), max(value), COALESCE(sum(value), 0),
       count(value), count(*) FILTER (WHERE quality >= 64), max(ts),
       (array_agg(value ORDER BY ts DESC))[1]
FROM readings WHERE sensor_id = $1 GROUP BY 1, 2
"""


async def fill(
    conn: asyncpg.Connection, sensor_id: int, start: datetime, seconds: int, step_s: int = 1
) -> None:
    """A flat 10.0 signal every step_s seconds, then its one-minute rollup."""
    await conn.execute(
        """INSERT INTO readings (sensor_id, ts, value, quality)
           SELECT $1, $2::timestamptz + make_interval(secs => g), 10.0, 0
           FROM generate_series(0, $3 - 1, $4) g""",
        sensor_id,
        start,
        seconds,
        step_s,
    )


async def rollup(conn: asyncpg.Connection, sensor_id: int) -> None:
    await conn.execute("DELETE FROM readings_1m WHERE sensor_id = $1", sensor_id)
    await conn.execute(ROLLUP_SQL, sensor_id)


def test_bucket_widths_keep_within_max_points() -> None:
    day = 86_400.0
    assert bucket_width_s(30 * day, 1000) == 3600  # 30 days at 1,000 points: hourly buckets
    assert bucket_width_s(3600, 1000) == 5
    for span in (1.0, 59.0, 3600.0, day, 7 * day, 400 * day):
        for points in (10, 100, 1000, 2000):
            width = bucket_width_s(span, points)
            assert span // width + 1 <= points
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert plan(start, start + timedelta(hours=1), max_points=100, expected_rows=50).source == "raw"
    hour = start + timedelta(hours=1)
    assert plan(start, hour, max_points=1000, expected_rows=None).source == "raw_buckets"
    assert plan(start, hour, max_points=100, expected_rows=None).source == "rollup"
    assert plan(start, start + timedelta(days=1), max_points=100, expected_rows=None).source == (
        "rollup"
    )


async def test_raw_when_few_rows(api: Api) -> None:
    sid = await api.sensor_id("gh1-det/co1")
    await fill(api.conn, sid, T0, 600, step_s=10)  # 60 readings
    r = await api.get(
        "/api/v1/readings",
        params={"sensor": "gh1-det/co1", "start": T0.isoformat(),
                "end": (T0 + timedelta(hours=1)).isoformat(), "max_points": 100},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "raw"
    assert len(body["points"]) == 60
    assert body["points"][0] == {
        "ts": "2026-11-28T08:00:00Z", "value": 10.0, "min": 10.0, "max": 10.0, "count": 1,
        "bad": 0, "quality": 0,
    }  # fmt: skip


async def test_nan_and_missing_values_render_null_with_quality(api: Api) -> None:
    sid = await api.sensor_id("gh1-det/co1")
    await api.conn.execute(
        """INSERT INTO readings VALUES ($1, $2, 'NaN', 65), ($1, $2 + interval '1 s', NULL, 66),
                                      ($1, $2 + interval '2 s', 'Infinity', 64),
                                      ($1, $2 + interval '3 s', 3.5, 0)""",
        sid,
        T0,
    )
    params = {
        "sensor": "gh1-det/co1",
        "start": T0.isoformat(),
        "end": (T0 + timedelta(minutes=1)).isoformat(),
    }
    r = await api.get("/api/v1/readings", params=params)
    assert r.status_code == 200
    assert "NaN" not in r.text and "Infinity" not in r.text
    points = r.json()["points"]
    assert [(p["value"], p["quality"], p["bad"]) for p in points] == [
        (None, 65, 1), (None, 66, 1), (None, 64, 1), (3.5, 0, 0),
    ]  # fmt: skip
    # through buckets: non-finite values are left out of min, max and mean, and counted bad
    await api.conn.execute(
        """INSERT INTO readings SELECT $1, $2::timestamptz + make_interval(secs => g), 1.0, 0
           FROM generate_series(4, 59) g""",
        sid,
        T0,
    )
    r = await api.get("/api/v1/readings", params={**params, "max_points": 10})
    assert r.json()["source"] == "raw_buckets"
    assert "NaN" not in r.text and "Infinity" not in r.text
    first = r.json()["points"][0]
    assert (first["min"], first["max"], first["count"], first["bad"]) == (1.0, 3.5, 7, 3)


async def test_single_sample_spike_survives_raw_buckets(api: Api) -> None:
    sid = await api.sensor_id("gh1-det/co1")
    await fill(api.conn, sid, T0, 3 * 3600)  # 3 h at 1 s: 10,800 readings
    spike_at = T0 + timedelta(seconds=5000)
    await api.conn.execute(
        "UPDATE readings SET value = 400 WHERE sensor_id = $1 AND ts = $2", sid, spike_at
    )
    r = await api.get(
        "/api/v1/readings",
        params={"sensor": "gh1-det/co1", "start": T0.isoformat(),
                "end": (T0 + timedelta(hours=3)).isoformat(), "max_points": 500},
    )  # fmt: skip
    body = r.json()
    assert body["source"] == "raw_buckets"
    assert body["bucket_s"] == 30
    assert len(body["points"]) <= 500
    assert max(p["max"] for p in body["points"]) == 400
    spiked = [p for p in body["points"] if p["max"] == 400]
    assert len(spiked) == 1
    assert spiked[0]["min"] == 10.0
    assert spiked[0]["count"] == 30
    assert sum(p["count"] for p in body["points"]) == 3 * 3600


async def test_single_sample_spike_survives_rollup(api: Api) -> None:
    sid = await api.sensor_id("gh1-det/co2")
    start = T0 - timedelta(days=2)
    await fill(api.conn, sid, start, 2 * 86_400, step_s=5)  # 2 days at 5 s
    spike_at = start + timedelta(hours=30, seconds=5)
    await api.conn.execute(
        "UPDATE readings SET value = 999, quality = 0 WHERE sensor_id = $1 AND ts = $2",
        sid,
        spike_at,
    )
    await api.conn.execute(
        "UPDATE readings SET value = NULL, quality = 66 WHERE sensor_id = $1 AND ts = $2",
        sid,
        spike_at + timedelta(seconds=5),
    )
    await rollup(api.conn, sid)
    r = await api.get(
        "/api/v1/readings",
        params={"sensor": "gh1-det/co2", "start": start.isoformat(), "end": T0.isoformat(),
                "max_points": 200},
    )  # fmt: skip
    body = r.json()
    assert body["source"] == "rollup"
    assert body["bucket_s"] == 900
    assert len(body["points"]) <= 200
    spiked = [p for p in body["points"] if p["max"] == 999]
    assert len(spiked) == 1
    assert spiked[0]["bad"] == 1
    assert spiked[0]["min"] == 10.0
    assert spiked[0]["value"] == pytest.approx((10.0 * 178 + 999) / 179)


async def test_range_and_sensor_validation(api: Api) -> None:
    start, end = T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()
    for params in (
        {"start": start, "end": end},  # no sensor
        {"sensor": "gh1-det/co1", "start": "2026-11-28T08:00:00", "end": end},  # no zone
        {"sensor": "gh1-det/co1", "start": "1700000000"},  # not RFC 3339
        {"sensor": "gh1-det/co1", "max_points": 100_000},
        {"sensor": "gh1-det/co1", "sensor_id": 1},  # unknown parameter
    ):
        r = await api.get("/api/v1/readings", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["code"] == "invalid"
    r = await api.get("/api/v1/readings", params={"sensor": "nope/co1"})
    assert r.status_code == 404
    r = await api.get("/api/v1/readings", user="south_viewer", params={"sensor": "gh1-det/co1"})
    assert r.status_code == 404


async def test_ranges_are_clamped_not_refused(api: Api) -> None:
    sensor = {"sensor": "gh1-det/co1"}
    body = (await api.get("/api/v1/readings", params=sensor)).json()  # the last 24 h
    assert (body["start"], body["end"]) == ("2026-11-27T08:00:00Z", "2026-11-28T08:00:00Z")
    assert body["max_points"] == 1000
    year_one = "0001-01-01T00:00:00+01:00"
    r = await api.get(
        "/api/v1/readings", params={**sensor, "end": T0.isoformat(), "start": year_one}
    )
    assert r.status_code == 200
    assert r.json()["start"] == "2025-10-24T08:00:00Z"  # 400 days (api.max_range_days)
    before = "2000-01-01T00:00:00Z"
    r = await api.get("/api/v1/readings", params={**sensor, "start": T0.isoformat(), "end": before})
    assert r.json()["points"] == []  # an empty range
    r = await api.get("/api/v1/readings", params={**sensor, "max_points": 5000})
    assert r.json()["max_points"] == 2000  # api.max_points
