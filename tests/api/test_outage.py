"""RELIABILITY R4: while the database is down the API answers 503 JSON with Retry-After, never
500, and recovers by itself. The outage is a cuttable TCP proxy in front of the shared server."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from api.app import create_app
from tests.api.conftest import free_port, running, seed, settings_for
from tests.api.proxy import CuttableProxy

pytestmark = pytest.mark.integration


def via(db_url: str, port: int) -> str:
    parts = urlsplit(db_url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "database_unavailable"
    assert int(r.headers["retry-after"]) > 0


async def test_outage_gives_503_and_recovers(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        tokens = await seed(conn)
    finally:
        await conn.close()
    upstream = urlsplit(db_url)
    auth = {"Authorization": f"Bearer {tokens['operator']}"}
    async with CuttableProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432) as proxy:
        app = create_app(settings_for(via(db_url, proxy.port)))
        async with running(app) as client:
            assert (await client.get("/ready")).status_code == 200
            r = await client.get("/api/v1/readings", params={"sensor": "gh1-det/co1"}, headers=auth)
            assert r.status_code == 200

            proxy.cut()
            for path in ("/ready", "/api/v1/readings?sensor=gh1-det/co1", "/api/v1/alarms",
                         "/api/v1/sites", "/api/v1/risk"):  # fmt: skip
                assert_unavailable(await client.get(path, headers=auth))
            r = await client.post("/api/v1/alarms/1/ack", json={}, headers=auth)
            assert_unavailable(r)
            assert (await client.get("/health")).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert (
                'hazwatch_api_requests_total{method="GET",route="/ready",status="503"}' in metrics
            )

            proxy.restore()
            deadline = asyncio.get_running_loop().time() + 15
            while (await client.get("/ready")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "API did not recover"
                await asyncio.sleep(0.1)
            r = await client.get("/api/v1/readings", params={"sensor": "gh1-det/co1"}, headers=auth)
            assert r.status_code == 200
            assert "500" not in {line.split('status="')[1][:3]
                                 for line in (await client.get("/metrics")).text.splitlines()
                                 if line.startswith("hazwatch_api_requests_total{")}  # fmt: skip


async def test_app_starts_with_the_database_down() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(settings_for(url))
    async with running(app) as client:
        assert (await client.get("/health")).status_code == 200
        assert_unavailable(await client.get("/ready"))
        r = await client.get(
            "/api/v1/readings",
            params={"sensor": "gh1-det/co1"},
            headers={"Authorization": "Bearer hw_whatever_token_value_000"},
        )
        assert_unavailable(r)
