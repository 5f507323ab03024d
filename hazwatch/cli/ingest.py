"""`hazwatch ingest`: run the collectors and the reading store until SIGINT/SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server

from alerting.bridge import IngestAlarms
from hazwatch.cli.common import DatabaseUrlOption, run, setup
from ingest.metrics import IngestMetrics
from ingest.modbus import ModbusCollector
from ingest.service import CollectorFactory, IngestService, Pipeline, run_until_signalled


def ingest_cmd(
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="serve Prometheus /metrics on this port (default HAZWATCH_INGEST__METRICS_PORT)"
        ),
    ] = None,
    mqtt: Annotated[bool, typer.Option(help="run the MQTT collector")] = True,
    modbus: Annotated[
        bool, typer.Option(help="poll the registry's Modbus devices (docs/modbus.md)")
    ] = True,
    alarms: Annotated[
        bool, typer.Option(help="evaluate alarms in each batch's transaction (docs/alarms.md)")
    ] = True,
) -> None:
    """Collect readings over MQTT and Modbus into the database until SIGINT/SIGTERM.

    MQTT messages are acknowledged to the broker only once their readings are committed.
    """
    settings = setup(database_url)
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    port = settings.ingest.metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1", registry=registry)

    def modbus_collector(pipeline: Pipeline) -> ModbusCollector:
        return ModbusCollector(
            pipeline.registry, pipeline.batcher, quarantine=pipeline.quarantine,
            settings=pipeline.settings.modbus, registry=registry,
        )  # fmt: skip

    collectors: list[CollectorFactory] = [modbus_collector] if modbus else []

    async def go() -> None:
        if not alarms:
            service = IngestService(settings, metrics, mqtt=mqtt, collectors=collectors)
            await run_until_signalled(service)
            return
        engine = IngestAlarms(settings.database)
        service = IngestService(
            settings, metrics, mqtt=mqtt, collectors=collectors,
            hook=engine.hook, tick=engine.tick, on_registry=engine.on_registry,
        )  # fmt: skip
        try:
            await run_until_signalled(service)
        finally:
            await engine.aclose()

    run(go())
