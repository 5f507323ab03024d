"""The demo end to end: every part running on the demo scenario shows all four colours within
the first few minutes, crews get them over MQTT, and the API answers with the printed token.

This runs the real thing for about two minutes of wall time (the scenario's red comes about
110 s in). It uses the registry's fixed Modbus ports 15020-15025 and the shared Mosquitto.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hazwatch.config import Settings
from hazwatch.console import render
from hazwatch.demo import DemoOptions, DemoRun, demo_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
DEADLINE_S = 180.0


class CrewListener:
    """A field crew's phone: subscribed to every site's alarm topic."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"crew-{uuid.uuid4()}")
        self.client.on_connect = lambda c, *_: c.subscribe("hazwatch/v1/+/alarms", qos=1)
        self.client.on_message = lambda _c, _u, msg: self.events.append(orjson.loads(msg.payload))

    def __enter__(self) -> CrewListener:
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _tiers_raised(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch(
        "SELECT DISTINCT tier FROM alarm_events WHERE kind IN ('raised', 'escalated')"
    )
    return {r["tier"] for r in rows}


async def test_demo_shows_all_four_colours_within_minutes() -> None:
    name = f"hw_demo_{uuid.uuid4().hex[:8]}"
    options = DemoOptions(registry=ROOT / "deploy" / "demo" / "anshan.yaml", database=name,
                          api_port=0)  # fmt: skip
    demo = DemoRun(demo_settings(Settings(), options), options)
    await demo.prepare()
    try:
        with CrewListener() as crew:
            running = asyncio.create_task(demo.run())
            conn = await asyncpg.connect(demo.settings.database.url)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + DEADLINE_S
                tiers: set[int] = set()
                while tiers != {1, 2, 3, 4} and loop.time() < deadline:
                    assert not running.done(), "the demo stopped by itself"
                    await asyncio.sleep(2.0)
                    tiers = await _tiers_raised(conn)
                assert tiers == {1, 2, 3, 4}, f"only tiers {sorted(tiers)} in {DEADLINE_S} s"

                state = await demo.gather()
                assert state.readings_total > 1000
                assert sum(state.active_by_tier.values()) > 0
                render(state)  # the live view renders what the demo gathered

                async with httpx.AsyncClient(base_url=demo.api_url) as api:
                    answer = await api.get(
                        "/api/v1/alarms", headers={"Authorization": f"Bearer {demo.token}"}
                    )
                    assert answer.status_code == 200
                    assert answer.json()["items"], "the API lists the demo's alarms"
                    refused = await api.get("/api/v1/alarms")
                    assert refused.status_code == 401
            finally:
                await conn.close()
            demo.stop()
            await asyncio.wait_for(running, timeout=60)
        report = demo.publish_report
        assert report is not None
        assert report.lost == 0
        assert report.acked == report.messages
        assert {e.get("tier") for e in crew.events} >= {3, 4}, "crews hear orange and red"
    finally:
        admin = await asyncpg.connect(demo.settings.database.url.rpartition("/")[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
