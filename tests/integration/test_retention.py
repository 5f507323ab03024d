"""Retention drops whole chunks past their age, for raw readings and rollups separately."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from hazwatch.config import IngestSettings
from hazwatch.retention import apply_retention

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)


async def test_old_chunks_go_recent_ones_stay(db: asyncpg.Connection) -> None:
    for age_days in (0, 20, 40, 400):
        ts = NOW - dt.timedelta(days=age_days)
        await db.execute("INSERT INTO readings VALUES (1, $1, 1.0, 0)", ts)
        await db.execute(
            "INSERT INTO readings_1m (sensor_id, bucket, min, max, sum, count, last_ts, last)"
            " VALUES (1, $1, 1, 1, 1, 1, $1, 1)",
            ts,
        )
    settings = IngestSettings(raw_retention_days=30, rollup_retention_days=365)
    result = await apply_retention(db, settings, now=NOW)
    assert result.readings_chunks == 2  # the 40- and 400-day-old chunks
    assert result.rollup_chunks == 1  # the 400-day-old chunk
    raw_ages = await db.fetch("SELECT $1::timestamptz - ts AS age FROM readings ORDER BY ts", NOW)
    assert [r["age"].days for r in raw_ages] == [20, 0]
    assert await db.fetchval("SELECT count(*) FROM readings_1m") == 3
    again = await apply_retention(db, settings, now=NOW)
    assert again == type(again)(0, 0)
