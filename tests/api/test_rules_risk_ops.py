"""Rule edits (validated, audited, announced), the risk picture, metrics and the schema."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from tests.api.conftest import T0, Api, insert_alarm

pytestmark = pytest.mark.integration


async def test_rule_edit_is_validated_stored_and_audited(api: Api) -> None:
    sid = await api.sensor_id("gh1-det/co1")
    before = (await api.get(f"/api/v1/sensors/{sid}/rules")).json()
    assert before["overrides"] == {}
    assert before["effective"]["high"]["red"] == 160  # CO default (GB 6222)

    notified: asyncio.Queue[str] = asyncio.Queue()
    await api.conn.add_listener("hazwatch_rules", lambda *args: notified.put_nowait(args[3]))

    body = {"high": {"blue": 30, "yellow": 50, "orange": None, "red": 150}, "deadband": 3}
    r = await api.put(f"/api/v1/sensors/{sid}/rules", user="engineer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["high"] == {"blue": 30, "yellow": 50, "orange": None, "red": 150}
    assert r.json()["effective"]["deadband"] == 3
    announced = json.loads(await asyncio.wait_for(notified.get(), 5))
    assert announced == {"sensor_id": sid, "sensor": "gh1-det/co1"}
    audit = await api.conn.fetchrow("SELECT * FROM audit_log WHERE action = 'rules.update'")
    assert audit["actor"] == "engineer"
    assert audit["target"] == "sensor:gh1-det/co1"
    assert audit["before"] == "{}"
    stored = await api.conn.fetchval("SELECT rules::text FROM sensors WHERE sensor_id = $1", sid)
    assert '"red": 150' in stored

    for bad in (
        {"high": {"blue": 50, "yellow": 40}},  # falls with rising tier
        {"deadband": -1},
        {"nonsense": 1},
        {"high": {"red": "hot"}},
        {"hold_s": 60},  # a hold with the CO on/off delays: the engine could not compile it
    ):
        r = await api.put(f"/api/v1/sensors/{sid}/rules", user="engineer", json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = await api.client.put(
        f"/api/v1/sensors/{sid}/rules",
        headers={**api.auth("engineer"), "content-type": "application/json"},
        content=b'{"high": {"red": NaN}}',
    )
    assert r.status_code == 422
    assert (
        await api.conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'rules.update'") == 1
    )


async def test_rule_edit_replaces_a_whole_block(api: Api) -> None:
    """An override's `high` replaces the default `high` whole (RuleSpec.overlay): the answer
    shows the effective rules, so an engineer sees the tiers switched off."""
    sid = await api.sensor_id("gh1-det/co1")
    path = f"/api/v1/sensors/{sid}/rules"
    r = await api.put(path, user="engineer", json={"low": {"blue": 5, "yellow": 9}})
    assert r.status_code == 422  # a low side must not rise from blue to red
    r = await api.put(path, user="admin", json={"high": {"blue": 100}})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["high"] == {
        "blue": 100,
        "yellow": None,
        "orange": None,
        "red": None,
    }
    assert r.json()["effective"]["deadband"] == 2  # untouched blocks keep the kind's default


async def test_risk_picture(api: Api) -> None:
    await insert_alarm(api.conn, "gh1-det/co1", tier=4)  # red on the orange-static holder
    await insert_alarm(api.conn, "room1-det/lel", tier=2)
    await insert_alarm(api.conn, "room1-det/lel", tier=4, shelved_until=T0 + timedelta(hours=1))
    await insert_alarm(api.conn, "ps1-det/co1", tier=1, state="cleared_unacked")
    r = await api.get("/api/v1/risk")
    assert r.status_code == 200
    picture = r.json()
    assert picture["combine"] == "max"
    sites = {s["site"]: s for s in picture["sites"]}
    assets = {a["asset"]: a for s in picture["sites"] for a in s["assets"]}
    assert assets["gh1"]["static"] == {"tier": 3, "colour": "orange"}
    assert assets["gh1"]["dynamic"] == {"tier": 4, "colour": "red"}
    assert assets["gh1"]["level"]["colour"] == "red"
    assert assets["room1"]["dynamic"]["tier"] == 2  # the shelved red is not in the colour
    assert assets["room1"]["suppressed_alarms"] == 1
    assert assets["room1"]["level"]["tier"] == 2
    assert assets["ps1"]["dynamic"]["tier"] == 0  # cleared alarms are not active
    assert assets["ps1"]["level"]["colour"] == "yellow"  # static yellow
    assert sites["north"]["level"]["tier"] == 4
    assert sites["south"]["level"]["tier"] == 2
    scoped = (await api.get("/api/v1/risk", user="south_viewer")).json()
    assert [s["site"] for s in scoped["sites"]] == ["south"]


async def test_metrics_and_schema(api: Api) -> None:
    await insert_alarm(api.conn, "gh1-det/co1", tier=3)
    await api.get("/api/v1/sites")
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        text = (await api.client.get("/metrics")).text
        if 'hazwatch_alarms_open{state="active_unacked",tier="3"} 1.0' in text:
            break
        assert asyncio.get_running_loop().time() < deadline, text
        await asyncio.sleep(0.05)
    assert (
        'hazwatch_api_requests_total{method="GET",route="/api/v1/sites",status="200"} 1.0' in text
    )
    assert "hazwatch_api_request_seconds_bucket" in text
    schema = (await api.client.get("/openapi.json")).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "/api/v1/alarms/{alarm_id}/ack" in schema["paths"]
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
