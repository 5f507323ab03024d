"""RELIABILITY S8 (and D4, S7): schemathesis against the app's own OpenAPI schema.

The app runs behind a real uvicorn server in a thread, on a seeded database of this test's own,
with alarms to act on. Every operation is called with generated data as an admin (so no route is
skipped for lack of a role) and its response goes through all of schemathesis's default checks,
plus ours: an error is always the JSON envelope, and no response carries NaN or Infinity.

Requests are sent with httpx, not schemathesis's requests transport: grafana-client pulls in
niquests, whose urllib3-future replaces the `urllib3` package at interpreter start, and
schemathesis's transport reaches into urllib3 internals that the fork changed. For the same
reason `ignored_auth` (which replays through that transport) is done here by hand: every
/api/v1 request is replayed without its token and must be refused with 401.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis.specs.openapi.checks import ignored_auth

from api.app import create_app
from api.auth import hash_token, new_secret
from hazwatch.config import Settings
from tests.api.conftest import insert_alarm, seed, settings_for
from tests.conftest import RUN_ID, create_db, db_url_for, drop_db

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
async def seeded_db(template_db: str) -> AsyncIterator[str]:
    name = f"hw_t_{RUN_ID}_schemathesis"
    await create_db(name, template=template_db)
    url = db_url_for(name)
    conn = await asyncpg.connect(url)
    try:
        await seed(conn)
        await conn.execute(
            """INSERT INTO api_tokens (user_id, name, token_hash, prefix)
               SELECT user_id, 'schemathesis', $1, $2 FROM users WHERE name = 'admin'""",
            hash_token(ADMIN_TOKEN),
            ADMIN_TOKEN[:10],
        )
        for sensor in ("gh1-det/co1", "gh1-det/co2", "ps1-det/co1"):
            await insert_alarm(conn, sensor)
        await conn.execute(
            """INSERT INTO readings SELECT n.sensor_id, now() - make_interval(secs => g), 5.0, 0
               FROM sensors n, generate_series(1, 3000, 10) g"""
        )
    finally:
        await conn.close()
    yield url
    await drop_db(name)


@pytest.fixture(scope="module")
def base_url(seeded_db: str) -> Iterator[str]:
    """The app served by uvicorn in a thread with its own event loop."""
    url = seeded_db
    config = uvicorn.Config(
        create_app(settings_for(url)), host="127.0.0.1", port=0, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(200):
        if server.started:
            started.set()
            break
        started.wait(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _no_constant(name: str) -> Any:
    raise ValueError(f"response JSON contains {name}")


@schemathesis.check
def errors_are_json_without_nan(ctx: schemathesis.CheckContext, response: Any, case: Any) -> None:
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if not content_type.startswith("application/json"):
        if response.status_code >= 400:
            raise AssertionError(f"error {response.status_code} is not JSON: {content_type}")
        return
    body = json.loads(response.content, parse_constant=_no_constant)
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"error without the envelope: {body!r}"
        assert isinstance(error.get("code"), str)
        assert isinstance(error.get("message"), str)


# The schema is the app's own, built without any I/O (create_app opens nothing until its
# lifespan runs); the requests go to the served app through `base_url`.
#
# One allowance: a rule edit may be refused with 422 although its body fits the schema, because
# the limits' order (a high side must not fall from blue to red) cannot be said in JSON Schema.
CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {
                "include-path": "/api/v1/sensors/{sensor_id}/rules",
                "include-method": "PUT",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
                    }
                },
            }
        ]
    }
)
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=CONFIG)


# An admin token made up front (schemathesis asks for it while it collects) and stored, hashed,
# in the seeded database. It is given through schemathesis's auth provider rather than forced
# into every request, so the cases schemathesis makes without a token stay without one.
ADMIN_TOKEN = new_secret()


@schema.auth()
class AdminToken:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return ADMIN_TOKEN

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def send(client: httpx.Client, kwargs: dict[str, Any]) -> httpx.Response:
    """Send a case serialised for `requests` with httpx."""
    kwargs = dict(kwargs)
    cookies = kwargs.pop("cookies", None)
    assert not cookies, "the API uses no cookies"
    data = kwargs.pop("data", None)
    if isinstance(data, bytes | str):
        kwargs["content"] = data
    elif data is not None:
        kwargs["data"] = data
    return client.request(**kwargs)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, base_url: str, client: httpx.Client
) -> None:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    response = send(client, kwargs)
    case.validate_response(
        response,
        additional_checks=[errors_are_json_without_nan],
        excluded_checks=[ignored_auth],
        transport_kwargs={"base_url": base_url},
    )
    if case.path.startswith("/api/v1/") and response.status_code < 400:
        kwargs["headers"] = {k: v for k, v in kwargs["headers"].items() if k != "Authorization"}
        replay = send(client, kwargs)
        assert replay.status_code == 401, f"{case.method} {case.path} without a token: {replay}"
