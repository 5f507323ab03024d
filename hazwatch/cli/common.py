"""What every command does first: settings, logging, and turning HazWatch errors into exits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from hazwatch.config import Settings
from hazwatch.errors import HazwatchError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def setup(database_url: str | None = None, *, rich_log: bool = False) -> Settings:
    """Build the settings (an explicit --database-url wins over the environment) and logging.

    With `rich_log`, log records go through the rich console, so they print above a live view
    instead of tearing it."""
    settings = Settings()
    if database_url is not None:
        settings = settings.model_copy(
            update={"database": settings.database.model_copy(update={"url": database_url})}
        )
    if rich_log:
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, log_time_format="[%Y-%m-%d %H:%M:%S]"
        )
        logging.basicConfig(level=settings.log_level.upper(), format="%(name)s: %(message)s",
                            handlers=[handler])  # fmt: skip
    else:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a HazwatchError becomes a clear message and exit code 1."""
    try:
        return asyncio.run(coro)
    except HazwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(1) from exc


DatabaseUrlOption = typer.Option(
    "--database-url", help="libpq URL; default from HAZWATCH_DATABASE__URL"
)
