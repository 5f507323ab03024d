"""`hazwatch notify`: run the notifier (alarm events to MQTT and webhooks, escalation)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import httpx
import typer

from alerting.notify import MqttAlarmPublisher, Notifier
from hazwatch.cli.common import DatabaseUrlOption, run, setup

app = typer.Typer(help="Send alarm events to crews (MQTT) and webhooks; escalate.")


@app.callback(invoke_without_command=True)
def notify(database_url: Annotated[str | None, DatabaseUrlOption] = None) -> None:
    """Run until interrupted. One notifier runs per database; a second one waits as a standby."""
    settings = setup(database_url)

    async def go() -> None:
        publisher = MqttAlarmPublisher(
            settings.mqtt,
            client_id=settings.notify.mqtt_client_id,
            ack_timeout_s=settings.notify.webhook_timeout_s,
        )
        async with publisher, httpx.AsyncClient() as http:
            notifier = Notifier(
                database=settings.database,
                settings=settings.notify,
                topic_root=settings.mqtt.topic_root,
                publisher=publisher,
                http=http,
                clock=lambda: datetime.now(UTC),
            )
            await notifier.run()

    run(go())
