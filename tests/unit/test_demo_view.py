"""The demo's terminal view names the web console next to the API address and token."""

from __future__ import annotations

import datetime as dt
import io

from rich.console import Console

from hazwatch.console import ConsoleState, render


def test_the_view_shows_the_console_address_and_token() -> None:
    state = ConsoleState(
        now=dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC),
        readings_per_s=120.0,
        readings_total=5000,
        quarantined_total=0,
        active_by_tier={},
        unacked=0,
        transitions=(),
        api_url="http://127.0.0.1:8080",
        token="hw_demo_token",
    )
    out = Console(width=120, record=True, file=io.StringIO())
    out.print(render(state))
    text = out.export_text()
    assert "operator console http://127.0.0.1:8080/console (paste the token)" in text
    assert "token hw_demo_token" in text
