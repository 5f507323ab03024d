"""The `hazwatch` command: composes the services from typed settings.

Each command group lives in its own module and registers itself here; a command builds
`Settings()`, configures logging and passes what it needs down.
"""

from __future__ import annotations

import typer

from hazwatch.cli import api, db, demo, ingest, notify, registry, simulate, users

app = typer.Typer(
    name="hazwatch",
    help="HazWatch: real-time monitoring of gas holders, pipelines, hazard sources and lightning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(registry.app, name="registry")
app.add_typer(simulate.app, name="simulate")
app.command("ingest")(ingest.ingest_cmd)
app.add_typer(api.app, name="api")
app.add_typer(notify.app, name="notify")
app.add_typer(users.users_app, name="users")
app.add_typer(users.tokens_app, name="tokens")
app.command("demo")(demo.demo_cmd)


def main() -> None:
    app()
