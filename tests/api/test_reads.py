"""Registry reads, latest values, site scope, and the JSON error envelope."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api import accounts
from tests.api.conftest import T0, Api

pytestmark = pytest.mark.integration


async def test_sites_assets_sensors(api: Api) -> None:
    r = await api.get("/api/v1/sites")
    assert r.status_code == 200
    assert [s["key"] for s in r.json()] == ["north", "south"]
    r = await api.get("/api/v1/assets", params={"site": "north"})
    assert [a["key"] for a in r.json()] == ["gh1", "room1"]
    gh1 = (await api.get("/api/v1/assets/gh1")).json()
    assert gh1["static_risk"] == 3  # R = 62: GB 18218 level II, orange
    sensors = (await api.get("/api/v1/sensors", params={"asset": "gh1"})).json()
    assert [s["key"] for s in sensors] == ["gh1-det/co1", "gh1-det/co2"]
    one = await api.get(f"/api/v1/sensors/{sensors[0]['sensor_id']}")
    assert one.json()["unit"] == "ppm"


async def test_site_scope_filters_lists_and_hides_objects(api: Api) -> None:
    r = await api.get("/api/v1/sites", user="south_viewer")
    assert [s["key"] for s in r.json()] == ["south"]
    sensors = (await api.get("/api/v1/sensors", user="south_viewer")).json()
    assert {s["site"] for s in sensors} == {"south"}
    hidden = await api.sensor_id("gh1-det/co1")
    for path in ("/api/v1/sites/north", "/api/v1/assets/gh1", f"/api/v1/sensors/{hidden}"):
        r = await api.get(path, user="south_viewer")
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


async def test_latest_renders_nan_as_null_with_quality(api: Api) -> None:
    co1, co2 = await api.sensor_id("gh1-det/co1"), await api.sensor_id("gh1-det/co2")
    await api.conn.execute(
        "INSERT INTO latest VALUES ($1, $3, 'NaN', 66), ($2, $3, 12.5, 0)", co1, co2, T0
    )
    r = await api.get("/api/v1/latest", params={"asset": "gh1"})
    assert r.status_code == 200
    assert "NaN" not in r.text
    values = {v["sensor"]: v for v in r.json()}
    assert values["gh1-det/co1"]["value"] is None
    assert values["gh1-det/co1"]["quality"] == 66
    assert values["gh1-det/co2"]["value"] == 12.5


async def test_errors_are_json(api: Api) -> None:
    r = await api.get("/api/v1/sites", user=None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"
    r = await api.client.get(
        "/api/v1/sites", headers={"Authorization": "Bearer hw_nonsense_00000000000"}
    )
    assert r.status_code == 401
    r = await api.get("/api/v1/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = await api.get("/api/v1/sensors/0")
    assert r.status_code == 422
    body = r.json()["error"]
    assert body["code"] == "invalid"
    assert body["details"][0]["loc"] == ["path", "sensor_id"]
    r = await api.client.delete("/api/v1/sites", headers=api.auth("admin"))
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_revoked_and_expired_tokens_are_refused(api: Api) -> None:
    record, secret = await accounts.create_token(
        api.conn, "viewer", name="short", expires_in=None, now=T0, actor="test"
    )
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200
    await accounts.revoke_token(api.conn, record.token_id, now=T0, actor="test")
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 401

    _, secret = await accounts.create_token(
        api.conn, "viewer", name="expiring", expires_in=timedelta(hours=1), now=T0, actor="test"
    )
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200
    api.clock.advance(3601)
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_token_is_stored_hashed(api: Api) -> None:
    rows = await api.conn.fetch("SELECT token_hash, prefix FROM api_tokens")
    secrets = set(api.tokens.values())
    for row in rows:
        assert bytes(row["token_hash"]).hex() not in secrets
        assert len(row["token_hash"]) == 32
        assert any(s.startswith(row["prefix"]) for s in secrets)
    me = (await api.get("/api/v1/me", user="north_op")).json()
    assert me == {
        "name": "north_op",
        "role": "operator",
        "sites": ["north"],
        "permissions": ["acknowledge", "assign", "comment", "read", "shelve"],
    }


async def test_failed_tokens_are_rate_limited(api: Api) -> None:
    """RELIABILITY S6: after api.auth_failures_per_min bad tokens a client gets 429 with
    Retry-After, before any database work, even with a good token; a minute later it is free."""
    bad = {"Authorization": "Bearer hw_guessing_000000000000000"}
    for _ in range(20):
        assert (await api.client.get("/api/v1/sites", headers=bad)).status_code == 401
    r = await api.get("/api/v1/sites", user="admin")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
