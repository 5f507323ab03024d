"""`hazwatch api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from hazwatch.cli.common import DatabaseUrlOption, setup

app = typer.Typer(help="Serve the HTTP API.", invoke_without_command=True)


@app.callback()
def serve(
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
    host: Annotated[
        str | None, typer.Option(help="bind address; default HAZWATCH_API__HOST")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port; default HAZWATCH_API__PORT")] = None,
) -> None:
    """Serve /api/v1, /docs, /health, /ready and /metrics until interrupted."""
    from api.app import create_app  # noqa: PLC0415 - only this command pays for FastAPI

    settings = setup(database_url)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=settings.api.port if port is None else port,
        log_config=None,  # logging is configured by setup()
        proxy_headers=False,
    )
