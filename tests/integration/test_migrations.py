"""Migrations on a fresh database of the real TimescaleDB server."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from hazwatch.migrate import available_migrations, migrate

pytestmark = pytest.mark.integration


async def test_fresh_database_gets_every_table_and_a_hypertable(db: asyncpg.Connection) -> None:
    tables = {
        r["tablename"]
        for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    expected = {
        "sites", "assets", "devices", "sensors", "readings", "readings_1m", "quarantine",
        "alarms", "alarm_events", "users", "api_tokens", "notifications", "schema_migrations",
    }  # fmt: skip
    assert expected <= tables
    hypertables = {
        r["hypertable_name"]
        for r in await db.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")
    }
    assert {"readings", "readings_1m"} <= hypertables
    applied = await db.fetchval("SELECT count(*) FROM schema_migrations")
    assert applied == len(available_migrations())


async def test_second_migrate_is_a_no_op(db: asyncpg.Connection) -> None:
    before = await db.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert await migrate(db) == []
    after = await db.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert before == after


async def test_unique_key_rejects_a_duplicate_reading(db: asyncpg.Connection) -> None:
    ts = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    await db.execute("INSERT INTO readings VALUES (1, $1, 3.5, 0)", ts)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("INSERT INTO readings VALUES (1, $1, 4.0, 0)", ts)
    await db.execute("INSERT INTO readings VALUES (2, $1, 4.0, 0)", ts)  # other sensor is fine
    assert await db.fetchval("SELECT count(*) FROM readings") == 2


async def test_alarm_events_are_append_only(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO sites (key, name) VALUES ('s', 'S')")
    await db.execute("INSERT INTO assets (site_id, key, kind, name) VALUES (1, 'a', 'tank', 'A')")
    await db.execute(
        "INSERT INTO sensors (key, asset_id, channel, kind, unit, name, range_min, range_max)"
        " VALUES ('a/x', 1, 'x', 'co', 'ppm', 'x', 0, 1000)"
    )
    alarm_id = await db.fetchval(
        "INSERT INTO alarms (sensor_id, asset_id, site_id, rule, state, tier, max_tier, raised_at)"
        " VALUES (1, 1, 1, 'high', 'active_unacked', 2, 2, now()) RETURNING alarm_id"
    )
    await db.execute(
        "INSERT INTO alarm_events (alarm_id, ts, kind, tier) VALUES ($1, now(), 'raised', 2)",
        alarm_id,
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("UPDATE alarm_events SET tier = 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("DELETE FROM alarm_events")


async def test_one_open_episode_per_sensor_and_rule(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO sites (key, name) VALUES ('s', 'S')")
    await db.execute("INSERT INTO assets (site_id, key, kind, name) VALUES (1, 'a', 'tank', 'A')")
    await db.execute(
        "INSERT INTO sensors (key, asset_id, channel, kind, unit, name, range_min, range_max)"
        " VALUES ('a/x', 1, 'x', 'co', 'ppm', 'x', 0, 1000)"
    )
    insert = (
        "INSERT INTO alarms (sensor_id, asset_id, site_id, rule, state, tier, max_tier, raised_at)"
        " VALUES (1, 1, 1, 'high', $1, 2, 2, now())"
    )
    await db.execute(insert, "closed")
    await db.execute(insert, "active_unacked")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, "cleared_unacked")
