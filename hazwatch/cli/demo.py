"""`hazwatch demo`: set up a fresh demo database and run the whole platform with a live view."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.live import Live

from hazwatch.cli.common import console, run, setup
from hazwatch.console import access_lines, render, summary_line
from hazwatch.demo import DemoOptions, DemoRun, demo_settings
from hazwatch.errors import HazwatchError

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = Path(__file__).parents[2] / "deploy" / "demo" / "anshan.yaml"


def demo_cmd(
    *,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")
    ] = None,
    registry: Annotated[Path, typer.Option(help="registry file of the city")] = DEFAULT_REGISTRY,
    scenario: Annotated[str, typer.Option(help="simulator scenario")] = "demo",
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    database: Annotated[
        str, typer.Option(help="database to (re)create on the configured server")
    ] = "hazwatch_demo",
    api_port: Annotated[int, typer.Option(help="API port; 0 picks a free one")] = 8080,
) -> None:
    """Run the demo city: simulators, ingest, alarms, notifier and API, with a live view.

    The database named by --database is dropped and created afresh. Ctrl-C stops everything
    cleanly: the simulators stop publishing, ingest commits and acknowledges what it holds.
    """
    options = DemoOptions(
        registry=registry, database=database, scenario=scenario, seed=seed, api_port=api_port
    )
    settings = demo_settings(setup(rich_log=True), options)
    demo = DemoRun(settings, options)
    run(_run(demo, duration))
    report = demo.publish_report
    if report is not None:
        console.print(
            f"stopped: {demo.readings_total:,} readings stored; the MQTT simulator published "
            f"{report.messages:,} messages, {report.acked:,} acknowledged by the broker"
        )


TERMINAL_ROWS_BESIDES_TRANSITIONS = 16  # header, alarm tiles, access panel, borders, headings
SUMMARY_EVERY_S = 10.0  # output that is not a terminal: a summary line this often


async def _run(demo: DemoRun, duration: float | None) -> None:
    console.print(f"preparing database {demo.options.database} ...")
    await demo.prepare()
    for line in access_lines(demo.api_url, demo.token):
        console.print(line, soft_wrap=True, highlight=False)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, demo.stop)
    if duration is not None:
        loop.call_later(duration, demo.stop)
    running = asyncio.create_task(demo.run(), name="demo")
    if console.is_terminal:
        await _live_view(demo, running)
    else:
        await _summaries(demo, running)
    await running


async def _live_view(demo: DemoRun, running: asyncio.Task[None]) -> None:
    with Live(console=console, refresh_per_second=2, screen=False) as live:
        while not running.done():
            rows = max(3, console.size.height - TERMINAL_ROWS_BESIDES_TRANSITIONS)
            try:
                live.update(render(await demo.gather(transitions=rows)))
            except (HazwatchError, asyncpg.PostgresError) as exc:
                # The view shows the last state; the parts report their own trouble.
                log.warning("console could not read the database: %s", exc)
            await asyncio.wait([running], timeout=1.0)


async def _summaries(demo: DemoRun, running: asyncio.Task[None]) -> None:
    """Piped or logged: a live view would show nothing until the end, so one line at a time."""
    while not running.done():
        await asyncio.wait([running], timeout=SUMMARY_EVERY_S)
        try:
            summary = summary_line(await demo.gather(transitions=0))
            console.print(summary, highlight=False, soft_wrap=True)
        except (HazwatchError, asyncpg.PostgresError) as exc:
            log.warning("console could not read the database: %s", exc)
