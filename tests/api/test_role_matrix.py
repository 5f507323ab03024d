"""RELIABILITY S3: every route against every role (and no token at all).

The expected matrix is written out here, independently of api.auth, and the route list comes
from the app itself: a route added without an entry below fails `test_every_route_is_in_the_matrix`.
Each forbidden pair must answer 401 (no token) or 403 (wrong role); each allowed pair must
succeed (2xx). State-changing calls get a fresh alarm each, so an allowed call never fails for
a reason other than its role.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from fastapi.routing import APIWebSocketRoute, iter_route_contexts

from api import accounts
from tests.api.conftest import T0, Api, insert_alarm

pytestmark = pytest.mark.integration

ROLES = ("viewer", "crew", "operator", "engineer", "admin")
EVERYONE = frozenset(ROLES)
OPEN = frozenset({None, *ROLES})  # no token needed
ACKERS = frozenset({"crew", "operator", "engineer", "admin"})
OPERATORS = frozenset({"operator", "engineer", "admin"})
ENGINEERS = frozenset({"engineer", "admin"})
ADMINS = frozenset({"admin"})

Call = Callable[[Api, str | None], Awaitable[httpx.Response]]


def get(path: str, **params: object) -> Call:
    async def call(api: Api, user: str | None) -> httpx.Response:
        return await api.get(path.format(**await ids(api)), user=user, params=params)

    return call


def act(sub: str, body: dict[str, object], **alarm: object) -> Call:
    """POST an action on a fresh alarm of its own."""

    async def call(api: Api, user: str | None) -> httpx.Response:
        alarm_id = await insert_alarm(api.conn, "gh1-det/co1", **alarm)  # type: ignore[arg-type]
        return await api.post(f"/api/v1/alarms/{alarm_id}/{sub}", user=user, json=body)

    return call


async def ids(api: Api) -> dict[str, int]:
    sensor_id = await api.sensor_id("gh1-det/co1")
    alarm_id = await api.conn.fetchval("SELECT min(alarm_id) FROM alarms")
    if alarm_id is None:
        alarm_id = await insert_alarm(api.conn, "gh1-det/co2", rule="matrix")
    return {"sensor_id": sensor_id, "alarm_id": alarm_id}


async def put_rules(api: Api, user: str | None) -> httpx.Response:
    sensor_id = await api.sensor_id("gh1-det/co1")
    body = {"high": {"blue": 20, "yellow": 40, "orange": 80, "red": 160}, "deadband": 2}
    return await api.put(f"/api/v1/sensors/{sensor_id}/rules", user=user, json=body)


_made = itertools.count()


async def create_user(api: Api, user: str | None) -> httpx.Response:
    body = {"name": f"new{next(_made)}", "role": "viewer", "sites": ["north"]}
    return await api.post("/api/v1/users", user=user, json=body)


async def create_token(api: Api, user: str | None) -> httpx.Response:
    return await api.post("/api/v1/users/viewer/tokens", user=user, json={"name": "matrix"})


async def revoke_token(api: Api, user: str | None) -> httpx.Response:
    record, _ = await accounts.create_token(
        api.conn, "crew", name="doomed", expires_in=None, now=T0, actor="test"
    )
    return await api.post(f"/api/v1/tokens/{record.token_id}/revoke", user=user)


MATRIX: dict[tuple[str, str], tuple[frozenset[str | None] | frozenset[str], Call | None]] = {
    ("GET", "/api/v1/sites"): (EVERYONE, get("/api/v1/sites")),
    ("GET", "/api/v1/sites/{site}"): (EVERYONE, get("/api/v1/sites/north")),
    ("GET", "/api/v1/assets"): (EVERYONE, get("/api/v1/assets")),
    ("GET", "/api/v1/assets/{asset}"): (EVERYONE, get("/api/v1/assets/gh1")),
    ("GET", "/api/v1/sensors"): (EVERYONE, get("/api/v1/sensors")),
    ("GET", "/api/v1/sensors/{sensor_id}"): (EVERYONE, get("/api/v1/sensors/{sensor_id}")),
    ("GET", "/api/v1/sensors/{sensor_id}/rules"): (
        EVERYONE,
        get("/api/v1/sensors/{sensor_id}/rules"),
    ),
    ("PUT", "/api/v1/sensors/{sensor_id}/rules"): (ENGINEERS, put_rules),
    ("GET", "/api/v1/latest"): (EVERYONE, get("/api/v1/latest")),
    ("GET", "/api/v1/readings"): (EVERYONE, get("/api/v1/readings", sensor="gh1-det/co1")),
    ("GET", "/api/v1/alarms"): (EVERYONE, get("/api/v1/alarms")),
    ("GET", "/api/v1/alarms/{alarm_id}"): (EVERYONE, get("/api/v1/alarms/{alarm_id}")),
    ("POST", "/api/v1/alarms/{alarm_id}/ack"): (ACKERS, act("ack", {"comment": "seen"})),
    ("POST", "/api/v1/alarms/{alarm_id}/comment"): (ACKERS, act("comment", {"comment": "x"})),
    ("POST", "/api/v1/alarms/{alarm_id}/shelve"): (
        OPERATORS,
        act("shelve", {"duration_s": 600, "reason": "work"}),
    ),
    ("POST", "/api/v1/alarms/{alarm_id}/unshelve"): (
        OPERATORS,
        act("unshelve", {}, shelved_until=T0 + timedelta(hours=1)),
    ),
    ("POST", "/api/v1/alarms/{alarm_id}/assign"): (OPERATORS, act("assign", {"assignee": "crew"})),
    ("POST", "/api/v1/alarms/{alarm_id}/out-of-service"): (
        ENGINEERS,
        act("out-of-service", {"out_of_service": True, "reason": "calibration"}),
    ),
    ("GET", "/api/v1/risk"): (EVERYONE, get("/api/v1/risk")),
    ("GET", "/api/v1/me"): (EVERYONE, get("/api/v1/me")),
    ("GET", "/api/v1/users"): (ADMINS, get("/api/v1/users")),
    ("POST", "/api/v1/users"): (ADMINS, create_user),
    ("GET", "/api/v1/tokens"): (ADMINS, get("/api/v1/tokens")),
    ("POST", "/api/v1/users/{name}/tokens"): (ADMINS, create_token),
    ("POST", "/api/v1/tokens/{token_id}/revoke"): (ADMINS, revoke_token),
    # The stream authenticates inside the WebSocket (tests/api/test_stream.py).
    ("WS", "/api/v1/stream"): (EVERYONE, None),
    ("GET", "/health"): (OPEN, get("/health")),
    ("GET", "/ready"): (OPEN, get("/ready")),
    ("GET", "/metrics"): (OPEN, get("/metrics")),
    ("GET", "/openapi.json"): (OPEN, get("/openapi.json")),
    ("GET", "/docs"): (OPEN, get("/docs")),
    ("GET", "/docs/oauth2-redirect"): (OPEN, get("/docs/oauth2-redirect")),
    # The operator console's static page and files hold no data: every call they make to
    # /api/v1 carries the user's token (tests/browser/test_console.py).
    ("GET", "/console"): (OPEN, get("/console")),
    ("GET", "/console/{name}"): (OPEN, get("/console/console.js")),
}


def app_routes(api: Api) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, included routers flattened."""
    found = set()
    for route in iter_route_contexts(api.app.routes):
        assert route.path is not None
        if isinstance(route.original_route, APIWebSocketRoute):
            found.add(("WS", route.path))
        else:
            found.update((m, route.path) for m in route.methods or () if m != "HEAD")
    return found


async def test_every_route_is_in_the_matrix(api: Api) -> None:
    routes = app_routes(api)
    missing = sorted(routes - MATRIX.keys())
    assert not missing, f"routes without a role-matrix entry: {missing}"
    stale = sorted(MATRIX.keys() - routes)
    assert not stale, f"matrix entries for routes that do not exist: {stale}"


async def test_role_matrix(api: Api) -> None:
    wrong: list[str] = []
    checked = 0
    for (method, path), (allowed, call) in MATRIX.items():
        if call is None:
            continue
        for user in (None, *ROLES):
            r = await call(api, user)
            checked += 1
            if user in allowed:
                if not 200 <= r.status_code < 300:
                    wrong.append(f"{method} {path} as {user}: {r.status_code} {r.text[:200]}")
            elif r.status_code != (401 if user is None else 403):
                wrong.append(f"{method} {path} as {user}: {r.status_code}, expected denial")
            elif r.headers.get("content-type") != "application/json":
                wrong.append(f"{method} {path} as {user}: denial is not JSON")
    assert not wrong, "\n".join(wrong)
    assert checked >= 6 * 30


async def test_forbidden_actions_write_nothing(api: Api) -> None:
    alarm_id = await insert_alarm(api.conn, "gh1-det/co1")
    await api.post(f"/api/v1/alarms/{alarm_id}/ack", user="viewer", json={"comment": "x"})
    await api.post(
        f"/api/v1/alarms/{alarm_id}/shelve", user="crew", json={"duration_s": 600, "reason": "x"}
    )
    kinds = await api.conn.fetch("SELECT kind FROM alarm_events WHERE alarm_id = $1", alarm_id)
    assert [k["kind"] for k in kinds] == ["raised"]
