"""`hazwatch ingest`: run the collectors and the reading store until SIGINT/SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server

from hazwatch.cli.common import DatabaseUrlOption, run, setup
from ingest.metrics import IngestMetrics
from ingest.service import IngestService, run_until_signalled


def ingest_cmd(
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="serve Prometheus /metrics on this port (default HAZWATCH_INGEST__METRICS_PORT)"
        ),
    ] = None,
    mqtt: Annotated[bool, typer.Option(help="run the MQTT collector")] = True,
) -> None:
    """Collect readings over MQTT into the database until SIGINT/SIGTERM.

    Messages are acknowledged to the broker only once their readings are committed.
    """
    settings = setup(database_url)
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    port = settings.ingest.metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1", registry=registry)

    async def go() -> None:
        service = IngestService(settings, metrics, mqtt=mqtt)
        await run_until_signalled(service)

    run(go())
