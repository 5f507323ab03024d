"""Grafana dashboards: every panel's SQL runs against the real schema as the read-only role.

There is no Grafana server on these machines, so Grafana's SQL macros are expanded here by a
small stand-in (`expand`) that follows Grafana's PostgreSQL macro definitions for the ones the
dashboards use. The role test covers RELIABILITY.md S9.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from hazwatch.registry.parse import load_registry
from hazwatch.registry.store import store_registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
FROM = dt.datetime(2026, 11, 28, 0, tzinfo=dt.UTC)
TO = dt.datetime(2026, 11, 28, 6, tzinfo=dt.UTC)


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expand(sql: str, variables: dict[str, str]) -> str:
    """Grafana's PostgreSQL macros, as documented, for a fixed time range."""
    frm, to = f"'{FROM.isoformat()}'", f"'{TO.isoformat()}'"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {frm} AND {to}", sql)
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),\s*([^)]+)\)",
        lambda m: f"time_bucket('{_interval(m[2])}', {m[1]}) AS time",
        sql,
    )
    for name, value in variables.items():
        sql = sql.replace(f"${name}", value)
    return sql


def _interval(text: str) -> str:
    text = text.strip()
    if text == "$__interval":
        return "1 minute"
    return {"1m": "1 minute", "10m": "10 minutes"}.get(text, text)


def _panels() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        found += [
            (path.name, panel["title"], target["rawSql"])
            for panel in dashboard["panels"]
            for target in panel["targets"]
        ]
        found += [
            (path.name, f"variable {v['name']}", v["query"])
            for v in dashboard["templating"]["list"]
        ]
    return found


def test_committed_dashboards_are_what_build_py_generates() -> None:
    for filename, text in _build_module().render_all().items():
        committed = (ROOT / "grafana" / "dashboards" / filename).read_text()
        assert committed == text, f"{filename} is stale: run python grafana/build.py"


@pytest.fixture
async def reader(db: asyncpg.Connection, db_url: str) -> Any:
    await store_registry(db, load_registry(ROOT / "deploy" / "demo" / "anshan.yaml"))
    await db.execute("INSERT INTO readings VALUES (1, $1, 5.0, 0)", FROM)
    await db.execute(
        "INSERT INTO readings_1m (sensor_id, bucket, min, max, sum, count, last_ts, last)"
        " VALUES (1, $1, 5, 5, 5, 1, $1, 5)",
        FROM,
    )
    await db.execute("INSERT INTO latest VALUES (1, $1, 5.0, 0)", FROM)
    await db.execute("INSERT INTO quarantine (source, reason) VALUES ('mqtt', 'malformed_json')")
    alarm = await db.fetchval(
        "INSERT INTO alarms (sensor_id, asset_id, site_id, rule, state, tier, max_tier, raised_at)"
        " SELECT sensor_id, asset_id, 1, 'high', 'active_unacked', 3, 3, $1 FROM sensors"
        " WHERE sensor_id = 1 RETURNING alarm_id",
        FROM,
    )
    await db.execute(
        "INSERT INTO alarm_events (alarm_id, ts, kind, tier) VALUES ($1, $2, 'raised', 3)",
        alarm,
        FROM,
    )
    await db.execute("SET ROLE hazwatch_reader")
    yield db
    await db.execute("RESET ROLE")


async def test_every_panel_query_runs_as_the_reader(reader: asyncpg.Connection) -> None:
    key = await reader.fetchval("SELECT key FROM sensors WHERE sensor_id = 1")
    panels = _panels()
    assert len(panels) >= 10
    results = {}
    for filename, title, sql in panels:
        try:
            results[(filename, title)] = await reader.fetch(expand(sql, {"sensor": f"'{key}'"}))
        except asyncpg.PostgresError as exc:
            pytest.fail(f"{filename} / {title}: {exc}")
    risk = results[("overview.json", "Risk picture (static vs active)")]
    assert max(r["risk_tier"] for r in risk) == 3  # the orange alarm (static risks are lower)
    assert results[("overview.json", "Active alarms by tier")][0]["value"] == 1


async def test_the_reader_role_cannot_change_anything(reader: asyncpg.Connection) -> None:
    for statement in (
        "INSERT INTO readings VALUES (1, now(), 1, 0)",
        "DELETE FROM readings",
        "UPDATE alarms SET tier = 0",
        "DROP TABLE quarantine",
        "SELECT * FROM api_tokens",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute(statement)
