"""The live stream: WebSocket auth, alarm events from pg_notify, latest values, site scope, and
the slow-consumer policy of the hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.metrics import ApiMetrics
from api.stream import SLOW_CONSUMER, StreamHub
from tests.api.conftest import T0, Api, insert_alarm, seed, served, settings_for

pytestmark = pytest.mark.integration


class Live:
    def __init__(self, base: str, tokens: dict[str, str]) -> None:
        self.base = base
        self.tokens = tokens

    def ws(self, user: str | None, query: str = "") -> Any:
        token = f"token={self.tokens[user]}" if user else ""
        sep = "&" if token and query else ""
        return connect(f"ws://{self.base}/api/v1/stream?{token}{sep}{query}")


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[tuple[Live, Api]]:
    conn = await asyncpg.connect(db_url)
    try:
        tokens = await seed(conn)
        app = create_app(settings_for(db_url))
        async with served(app) as base, httpx.AsyncClient(base_url=f"http://{base}") as client:
            deadline = asyncio.get_running_loop().time() + 10
            while (await client.get("/ready")).json().get("stream") != "listening":
                assert asyncio.get_running_loop().time() < deadline, "stream never listened"
                await asyncio.sleep(0.05)
            api = Api(app=app, client=client, conn=conn, clock=None, tokens=tokens)  # type: ignore[arg-type]
            yield Live(base, tokens), api
    finally:
        await conn.close()


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of a type within 5 s, skipping others (latest values come unasked)."""
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_alarm_events_reach_the_stream_within_scope(live: tuple[Live, Api]) -> None:
    stream, api = live
    north_alarm = await insert_alarm(api.conn, "gh1-det/co1")
    south_alarm = await insert_alarm(api.conn, "ps1-det/co1")
    async with (
        stream.ws("operator", "latest=false") as everyone,
        stream.ws("south_viewer", "latest=false") as south,
    ):
        hello = await next_of(everyone, "hello")
        assert hello["user"] == "operator"
        assert hello["sites"] is None
        assert (await next_of(south, "hello"))["sites"] == ["south"]
        # an operator action over HTTP, and an event as the engine would notify it
        r = await api.post(f"/api/v1/alarms/{north_alarm}/ack", json={"comment": "on it"})
        assert r.status_code == 200, r.text
        payload = {"event_id": 0, "alarm_id": south_alarm, "kind": "escalated", "site": "south"}
        await api.conn.execute(
            "SELECT pg_notify('hazwatch_alarm_events', $1)", orjson.dumps(payload).decode()
        )
        first = (await next_of(everyone, "alarm_event"))["event"]
        assert first["alarm_id"] == north_alarm
        assert first["kind"] == "acknowledged"
        assert first["actor"] == "operator"
        assert first["state"] == "active_acked"
        assert first["suppressed"] is False
        assert (await next_of(everyone, "alarm_event"))["event"]["alarm_id"] == south_alarm
        # the south viewer hears only the south event
        assert (await next_of(south, "alarm_event"))["event"]["alarm_id"] == south_alarm


async def test_latest_values_are_pushed(live: tuple[Live, Api]) -> None:
    stream, api = live
    sid = await api.sensor_id("gh1-det/co1")
    async with stream.ws("viewer") as ws:
        await next_of(ws, "hello")
        await api.conn.execute("INSERT INTO latest VALUES ($1, now(), 'NaN', 65)", sid)
        message = await next_of(ws, "latest")
        assert message["values"][0]["sensor"] == "gh1-det/co1"
        assert message["values"][0]["value"] is None
        assert message["values"][0]["quality"] == 65
        await api.conn.execute(
            "UPDATE latest SET ts = ts + interval '1 s', value = 7.5, quality = 0 "
            "WHERE sensor_id = $1",
            sid,
        )
        message = await next_of(ws, "latest")
        assert message["values"][0]["value"] == 7.5


async def test_first_message_auth_and_bad_tokens(live: tuple[Live, Api]) -> None:
    stream, _ = live
    async with stream.ws(None) as ws:
        await ws.send(json.dumps({"token": stream.tokens["crew"]}))
        assert (await next_of(ws, "hello"))["role"] == "crew"
    async with connect(
        f"ws://{stream.base}/api/v1/stream?token=hw_wrongwrongwrongwrongwrong"
    ) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    async with stream.ws(None) as ws:
        await ws.send("not json")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_slow_subscriber_is_dropped_and_others_keep_receiving(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=0, max_size=1)
    settings = settings_for(db_url)
    metrics = ApiMetrics()
    hub = StreamHub(
        database=settings.database, pool=pool, metrics=metrics, queue_max=3,
        latest_interval_s=60, clock=lambda: T0,
    )  # fmt: skip
    try:
        with (
            hub.subscribe(sites=None, want_latest=False) as slow,
            hub.subscribe(sites=None, want_latest=False) as fast,
        ):
            for i in range(10):
                hub.broadcast({"type": "alarm_event", "event": {"event_id": i}}, "north")
                if not fast.queue.empty():
                    assert (await fast.queue.get())["event"]["event_id"] == i
            assert slow.closed.is_set()
            assert slow.reason == SLOW_CONSUMER
            assert slow.queue.qsize() == 3
            assert not fast.closed.is_set()
        sample = metrics.registry.get_sample_value(
            "hazwatch_api_stream_disconnects_total", {"reason": SLOW_CONSUMER}
        )
        assert sample == 1.0
    finally:
        await pool.close()
