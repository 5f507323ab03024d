"""Grafana dashboards as code: `python grafana/build.py` writes grafana/dashboards/*.json.

Every panel is a PostgreSQL query against HazWatch's tables through the read-only role
`hazwatch_reader`. tests/integration/test_grafana.py runs every panel's SQL against a real
database (there is no Grafana server on the build machines) and checks that the committed JSON
is what this file generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "hazwatch"}
TIER_COLOURS = {"1": "blue", "2": "yellow", "3": "orange", "4": "red"}
OUT = Path(__file__).parent / "dashboards"

Panel = dict[str, Any]


def _panel(
    title: str, kind: str, sql: str, *, x: int, y: int, w: int, h: int, fmt: str = "table"
) -> Panel:
    return {
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "format": fmt,
                "rawQuery": True,
                "editorMode": "code",
                "rawSql": sql.strip(),
            }
        ],
    }


def _dashboard(uid: str, title: str, panels: list[Panel], variables: list[Any]) -> dict[str, Any]:
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
    return {
        "uid": uid,
        "title": title,
        "tags": ["hazwatch"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def _query_variable(name: str, sql: str, *, multi: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": sql,
        "refresh": 1,
        "multi": multi,
        "includeAll": multi,
    }


def overview() -> dict[str, Any]:
    risk = """
SELECT s.name AS site, a.name AS asset, a.static_risk AS static_tier,
       coalesce(max(al.tier) FILTER (WHERE al.state IN ('active_unacked', 'active_acked')
                                     AND al.shelved_until IS NULL AND NOT al.out_of_service), 0)
           AS active_tier,
       greatest(a.static_risk,
                coalesce(max(al.tier) FILTER (WHERE al.state IN ('active_unacked', 'active_acked')
                                              AND al.shelved_until IS NULL
                                              AND NOT al.out_of_service), 0)) AS risk_tier
FROM assets a
JOIN sites s USING (site_id)
LEFT JOIN alarms al ON al.asset_id = a.asset_id AND al.state <> 'closed'
WHERE a.active
GROUP BY s.name, a.name, a.static_risk
ORDER BY risk_tier DESC, site, asset
"""
    active = """
SELECT tier AS metric, count(*) AS value
FROM alarms WHERE state IN ('active_unacked', 'active_acked') AND tier > 0
GROUP BY tier ORDER BY tier DESC
"""
    events = """
SELECT $__timeGroupAlias(e.ts, 1m), e.tier::text AS metric, count(*) AS value
FROM alarm_events e
WHERE $__timeFilter(e.ts) AND e.kind IN ('raised', 'escalated')
GROUP BY 1, 2 ORDER BY 1
"""
    rate = """
SELECT bucket AS time, sum(count + bad_count) / 60.0 AS "readings/s"
FROM readings_1m WHERE $__timeFilter(bucket)
GROUP BY bucket ORDER BY bucket
"""
    quarantine = """
SELECT reason, count(*) AS payloads, max(received_at) AS last_seen
FROM quarantine WHERE $__timeFilter(received_at)
GROUP BY reason ORDER BY payloads DESC
"""
    unacked = """
SELECT al.raised_at AS raised, al.tier, se.key AS sensor, al.rule, al.state, al.value,
       al.assignee
FROM alarms al JOIN sensors se USING (sensor_id)
WHERE al.state IN ('active_unacked', 'cleared_unacked')
ORDER BY al.tier DESC, al.raised_at
LIMIT 200
"""
    panels = [
        _panel("Risk picture (static vs active)", "table", risk, x=0, y=0, w=14, h=10),
        _panel("Active alarms by tier", "stat", active, x=14, y=0, w=10, h=5),
        _panel("Ingest rate", "timeseries", rate, x=14, y=5, w=10, h=5, fmt="time_series"),
        _panel("Alarms raised per minute by tier", "timeseries", events, x=0, y=10, w=14, h=8,
               fmt="time_series"),
        _panel("Quarantine by reason", "table", quarantine, x=14, y=10, w=10, h=8),
        _panel("Waiting for acknowledgement", "table", unacked, x=0, y=18, w=24, h=10),
    ]  # fmt: skip
    return _dashboard("hazwatch-overview", "HazWatch overview", panels, [])


def sensor_trends() -> dict[str, Any]:
    trend = """
SELECT $__timeGroupAlias(bucket, $__interval), se.key AS metric,
       min(r.min) AS min, max(r.max) AS max, sum(r.sum) / nullif(sum(r.count), 0) AS avg
FROM readings_1m r JOIN sensors se USING (sensor_id)
WHERE $__timeFilter(bucket) AND se.key IN ($sensor)
GROUP BY 1, se.key ORDER BY 1
"""
    latest = """
SELECT se.key AS sensor, se.unit, l.value, l.quality, l.ts
FROM latest l JOIN sensors se USING (sensor_id)
WHERE se.key IN ($sensor)
ORDER BY se.key
"""
    variables = [
        _query_variable("sensor", "SELECT key FROM sensors WHERE active ORDER BY key", multi=True)
    ]
    panels = [
        _panel("Min / avg / max per interval", "timeseries", trend, x=0, y=0, w=24, h=12,
               fmt="time_series"),
        _panel("Latest values", "table", latest, x=0, y=12, w=24, h=8),
    ]  # fmt: skip
    return _dashboard("hazwatch-sensors", "HazWatch sensor trends", panels, variables)


def alarm_kpis() -> dict[str, Any]:
    per_10_min = """
SELECT $__timeGroupAlias(ts, 10m), count(*) AS "alarms per 10 min"
FROM alarm_events WHERE $__timeFilter(ts) AND kind = 'raised'
GROUP BY 1 ORDER BY 1
"""
    floods = """
SELECT time_bucket('10 minutes', ts) AS window_start, count(*) AS raised
FROM alarm_events WHERE $__timeFilter(ts) AND kind = 'raised'
GROUP BY 1 HAVING count(*) > 10 ORDER BY 1 DESC
"""
    chattering = """
SELECT se.key AS sensor, al.rule, count(*) AS episodes
FROM alarms al JOIN sensors se USING (sensor_id)
WHERE $__timeFilter(al.raised_at)
GROUP BY se.key, al.rule HAVING count(*) >= 3
ORDER BY episodes DESC LIMIT 20
"""
    standing = """
SELECT se.key AS sensor, al.rule, al.tier, al.raised_at, now() - al.raised_at AS standing_for
FROM alarms al JOIN sensors se USING (sensor_id)
WHERE al.state IN ('active_unacked', 'active_acked') AND al.raised_at < now() - interval '24 hours'
ORDER BY al.raised_at
"""
    panels = [
        _panel("Alarm rate (EEMUA 191: about 1 per 10 min is acceptable)", "timeseries",
               per_10_min, x=0, y=0, w=24, h=8, fmt="time_series"),
        _panel("Floods (> 10 alarms in 10 min)", "table", floods, x=0, y=8, w=8, h=8),
        _panel("Chattering (3+ episodes in range)", "table", chattering, x=8, y=8, w=8, h=8),
        _panel("Standing (active > 24 h)", "table", standing, x=16, y=8, w=8, h=8),
    ]  # fmt: skip
    return _dashboard("hazwatch-alarm-kpis", "HazWatch alarm KPIs (ISA-18.2)", panels, [])


DASHBOARDS = {"overview": overview, "sensor-trends": sensor_trends, "alarm-kpis": alarm_kpis}


def render_all() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for filename, text in render_all().items():
        (OUT / filename).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / filename}")


if __name__ == "__main__":
    main()
