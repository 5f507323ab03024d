"""The notifier against the real Mosquitto (a topic root of this test's own) and a local webhook
that fails before it succeeds: delivery once, retries recorded, suppression, escalation, and no
second delivery after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI, Request, Response
from paho.mqtt.enums import CallbackAPIVersion

from alerting import actions
from alerting.notify import MqttAlarmPublisher, Notifier
from hazwatch.config import DatabaseSettings, MqttSettings, NotifySettings
from tests.api.conftest import T0, Clock, insert_alarm, seed, served

pytestmark = pytest.mark.integration


@dataclass
class Hook:
    """A webhook receiver that answers 503 to the first `fail_first` posts."""

    fail_first: int
    received: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.calls += 1
            if self.calls <= self.fail_first:
                return Response(status_code=503)
            self.received.append(orjson.loads(await request.body()))
            return Response(status_code=204)

        return app


class Subscriber:
    """A paho client on the shared broker, collecting what arrives under a topic root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.messages: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{root}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._loop.call_soon_threadsafe(self._ready.set)
        self.client.on_message = lambda _c, _u, m: self._loop.call_soon_threadsafe(
            self.messages.put_nowait, (m.topic, orjson.loads(m.payload))
        )

    async def __aenter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    async def next(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.messages.get(), 10)


async def until(condition: Any, what: str) -> None:
    """Poll a condition (the database, a receiver's list) with a 10 s deadline."""
    async with asyncio.timeout(10):
        while not await condition():  # noqa: ASYNC110 - nothing to await but the condition
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def notifier(
    db_url: str, root: str, settings: NotifySettings, clock: Clock
) -> AsyncIterator[Notifier]:
    mqtt_settings = MqttSettings(host="127.0.0.1", port=1883)
    publisher = MqttAlarmPublisher(
        mqtt_settings, client_id=f"hw-notify-{uuid.uuid4().hex[:8]}", ack_timeout_s=5
    )
    async with publisher, httpx.AsyncClient() as http:
        service = Notifier(
            database=DatabaseSettings(url=db_url, pool_max=2),
            settings=settings,
            topic_root=root,
            publisher=publisher,
            http=http,
            clock=clock,
        )
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.running.wait(), 10)
        try:
            yield service
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wake(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_notify('hazwatch_alarm_events', '{}')")


async def test_delivery_retries_suppression_escalation_restart(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    root = f"hwtest-{uuid.uuid4().hex[:8]}/v1"
    hook, boss = Hook(fail_first=2), Hook(fail_first=0)
    clock = Clock()
    try:
        await seed(conn)
        async with served(hook.app()) as hook_at, served(boss.app()) as boss_at:
            settings = NotifySettings(
                webhooks=(f"http://{hook_at}/hook",),
                webhook_attempts=4,
                webhook_backoff_s=0.05,
                escalation_after_s=600,
                escalation_webhooks=(f"http://{boss_at}/hook",),
                escalation_check_s=0.05,
            )
            async with Subscriber(root) as crew:
                async with notifier(db_url, root, settings, clock):
                    alarm = await insert_alarm(conn, "gh1-det/co1", tier=2)
                    shelved = await insert_alarm(
                        conn, "gh1-det/co2", tier=4, shelved_until=T0 + timedelta(hours=1)
                    )
                    await wake(conn)
                    topic, message = await crew.next()
                    assert topic == f"{root}/north/alarms"
                    assert message["alarm_id"] == alarm
                    assert message["kind"] == "raised"
                    assert message["colour"] == "yellow"
                    await until(lambda: asyncio.sleep(0, len(hook.received) == 1), "webhook")
                    assert hook.calls == 3  # two 503s, then delivered
                    assert hook.received[0]["event_id"] == message["event_id"]

                    async with conn.transaction():
                        await actions.acknowledge(conn, alarm, actor="crew", at=T0)
                    topic, message = await crew.next()
                    assert (message["alarm_id"], message["kind"]) == (alarm, "acknowledged")
                    assert message["state"] == "active_acked"

                    # escalation: a red alarm left unacknowledged past escalation_after_s
                    red = await insert_alarm(conn, "ps1-det/co1", tier=4)
                    await wake(conn)
                    topic, message = await crew.next()
                    assert (topic, message["alarm_id"]) == (f"{root}/south/alarms", red)
                    clock.advance(601)
                    topic, message = await crew.next()
                    assert topic == f"{root}/south/escalations"
                    assert message["alarm_id"] == red
                    assert message["unacknowledged_s"] == 601
                    await until(lambda: asyncio.sleep(0, len(boss.received) == 1), "boss")
                    # The receiver has the escalation; wait until the notifier has also logged
                    # every delivery, so stopping it now is a clean stop, not a crash between a
                    # POST and its log row (which would rightly be retried after the restart).
                    await until(
                        lambda: conn.fetchval(
                            "SELECT count(*) FILTER (WHERE channel = 'escalation') = 2"
                            " AND bool_and(status = 'delivered') FROM notifications"
                        ),
                        "delivery log",
                    )

                rows = await conn.fetch("SELECT * FROM notifications ORDER BY notification_id")
                raised_hook = next(r for r in rows if r["channel"] == "webhook")
                assert raised_hook["alarm_id"] == alarm
                assert raised_hook["attempts"] == 3  # every attempt is in the delivery log
                assert raised_hook["last_error"] == "HTTP 503"
                assert {r["status"] for r in rows} == {"delivered"}
                assert not [r for r in rows if r["alarm_id"] == shelved]  # suppressed
                escalations = [r for r in rows if r["channel"] == "escalation"]
                assert sorted(r["alarm_id"] for r in escalations) == [red, red]

                # a restart sends what is new, and nothing twice
                before = len(rows)
                async with conn.transaction():
                    await actions.comment(conn, red, actor="operator", at=T0, text="on my way")
                async with notifier(db_url, root, settings, clock):
                    topic, message = await crew.next()
                    assert (message["alarm_id"], message["kind"]) == (red, "commented")
                    await until(
                        lambda: conn.fetchval(
                            "SELECT count(*) = $1 FROM notifications WHERE status = 'delivered'",
                            before + 2,
                        ),
                        "restart deliveries",
                    )
                    clock.advance(600)
                    await asyncio.sleep(0.3)  # several escalation checks: none is repeated
                assert crew.messages.empty()
                assert len(boss.received) == 1
    finally:
        await conn.close()
