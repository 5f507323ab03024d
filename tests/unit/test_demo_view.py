"""The demo's terminal view names the web console next to the API address and token."""

from __future__ import annotations

import datetime as dt
import io

from rich.console import Console

from hazwatch.console import ConsoleState, Transition, render, summary_line
from hazwatch.domain import Tier


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


def _busy_state() -> ConsoleState:
    at = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
    transitions = tuple(
        Transition(
            ts=at - dt.timedelta(seconds=i),
            kind="escalated",
            tier=Tier.ORANGE,
            sensor=f"anshan-lpg-terminal/tank-farm-detector-{i:02d}/lel",
            rule="high",
            value=42.5,
            state="active_unacked",
        )
        for i in range(12)
    )
    return ConsoleState(
        now=at,
        readings_per_s=1234.0,
        readings_total=99_000,
        quarantined_total=3,
        active_by_tier={Tier.ORANGE: 12, Tier.RED: 1},
        unacked=13,
        transitions=transitions,
        api_url="http://127.0.0.1:8080",
        token="hw_" + "x" * 40,
    )


def test_on_an_80_column_terminal_the_token_and_times_stay_whole() -> None:
    out = Console(width=80, record=True, file=io.StringIO())
    out.print(render(_busy_state()))
    text = out.export_text()
    assert "token hw_" + "x" * 40 in text
    assert "operator console http://127.0.0.1:8080/console" in text
    times = [t.ts.strftime("%H:%M:%S") for t in _busy_state().transitions]
    assert all(f" {hhmmss} │" in text for hhmmss in times)  # whole, not cut to "08:0…"
    assert text.count("│ escalated │ orange │") == 12
    assert text.count("│ unacked") == 12
    assert text.index("query it") < text.index("latest transitions")


def test_the_summary_line_for_a_pipe_or_log_names_the_figures() -> None:
    line = summary_line(_busy_state())
    assert line == (
        "08:00:00 1,234 readings/s, 99,000 stored, 3 quarantined;"
        " active alarms red 1 orange 12 yellow 0 blue 0; 13 waiting for acknowledgement"
    )
