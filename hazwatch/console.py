"""The demo's live terminal view: what an operator glances at first.

`ConsoleState` is gathered from the database once a second (`gather_state`); `render` turns it
into a rich layout and touches nothing else, so the view is tested without a terminal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import asyncpg
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hazwatch.domain import Tier

TIER_STYLE = {
    Tier.NORMAL: "green",
    Tier.BLUE: "bold white on blue",
    Tier.YELLOW: "bold black on yellow",
    Tier.ORANGE: "bold black on dark_orange",
    Tier.RED: "bold white on red",
}


# The alarm's state now, in a word: the column is narrow and an operator reads it at a glance.
STATE_WORD = {
    "active_unacked": "unacked",
    "active_acked": "acked",
    "cleared_unacked": "clear, unacked",
    "closed": "closed",
}


@dataclass(frozen=True, slots=True)
class Transition:
    ts: dt.datetime
    kind: str
    tier: Tier
    sensor: str
    rule: str
    value: float | None
    state: str  # the alarm's state now, not at the event


@dataclass(frozen=True, slots=True)
class ConsoleState:
    now: dt.datetime
    readings_per_s: float
    readings_total: int
    quarantined_total: int
    active_by_tier: dict[Tier, int]
    unacked: int
    transitions: tuple[Transition, ...]
    api_url: str
    token: str
    notes: tuple[str, ...] = field(default_factory=tuple)


async def gather_state(
    conn: asyncpg.Connection,
    *,
    readings_per_s: float,
    readings_total: int,
    api_url: str,
    token: str,
    now: dt.datetime,
    limit: int = 12,
) -> ConsoleState:
    counts = await conn.fetch(
        """SELECT tier, count(*) AS n, count(*) FILTER (WHERE state = 'active_unacked') AS unacked
           FROM alarms WHERE state IN ('active_unacked', 'active_acked') AND tier > 0
           GROUP BY tier"""
    )
    rows = await conn.fetch(
        """SELECT e.ts, e.kind, e.tier, s.key AS sensor, a.rule, e.value, a.state
           FROM alarm_events e JOIN alarms a USING (alarm_id) JOIN sensors s USING (sensor_id)
           ORDER BY e.ts DESC, e.event_id DESC LIMIT $1""",
        limit,
    )
    quarantined = await conn.fetchval("SELECT count(*) FROM quarantine")
    return ConsoleState(
        now=now,
        readings_per_s=readings_per_s,
        readings_total=readings_total,
        quarantined_total=int(quarantined),
        active_by_tier={Tier(r["tier"]): int(r["n"]) for r in counts},
        unacked=sum(int(r["unacked"]) for r in counts),
        transitions=tuple(_transition(r) for r in rows),
        api_url=api_url,
        token=token,
    )


def _transition(r: asyncpg.Record) -> Transition:
    return Transition(
        ts=r["ts"],
        kind=r["kind"],
        tier=Tier(r["tier"]),
        sensor=r["sensor"],
        rule=r["rule"],
        value=r["value"],
        state=r["state"],
    )


def access_lines(api_url: str, token: str) -> list[str]:
    """Where to look and with what: printed once as plain lines (so they can be copied, and
    survive in a log) and kept in the live view."""
    return [
        f"API {api_url}   docs {api_url}/docs",
        f"operator console {api_url}/console (paste the token)",
        f"token {token}",
        f"curl -H 'Authorization: Bearer {token}' {api_url}/api/v1/alarms",
    ]


def summary_line(state: ConsoleState) -> str:
    """The view in one line, for output that is not a terminal (a pipe, a log file)."""
    counts = " ".join(
        f"{tier.colour} {state.active_by_tier.get(tier, 0)}"
        for tier in (Tier.RED, Tier.ORANGE, Tier.YELLOW, Tier.BLUE)
    )
    return (
        f"{state.now:%H:%M:%S} {state.readings_per_s:,.0f} readings/s,"
        f" {state.readings_total:,} stored, {state.quarantined_total:,} quarantined;"
        f" active alarms {counts}; {state.unacked} waiting for acknowledgement"
    )


def render(state: ConsoleState) -> RenderableType:
    header = Text.assemble(
        ("HazWatch demo", "bold"),
        f"   {state.now:%Y-%m-%d %H:%M:%S} UTC   ",
        (f"{state.readings_per_s:,.0f}", "bold cyan"),
        " readings/s   ",
        (f"{state.readings_total:,}", "cyan"),
        " stored   ",
        (f"{state.quarantined_total:,}", "magenta"),
        " quarantined",
    )
    tiles = Table.grid(padding=(0, 2))
    for _ in range(4):
        tiles.add_column()
    cells = []
    for tier in (Tier.RED, Tier.ORANGE, Tier.YELLOW, Tier.BLUE):
        count = state.active_by_tier.get(tier, 0)
        style = TIER_STYLE[tier] if count else "dim"  # only colours with alarms light up
        cells.append(Text(f" {tier.colour.upper()} {count:>3} ", style))
    tiles.add_row(*cells)
    summary = Text(f"{state.unacked} active alarm(s) waiting for acknowledgement")

    log = Table(expand=True, show_edge=False)
    log.add_column("time", no_wrap=True, min_width=8)
    log.add_column("event", no_wrap=True, min_width=7)
    log.add_column("tier", no_wrap=True, min_width=6)
    log.add_column("sensor", no_wrap=True, overflow="ellipsis", ratio=3)
    log.add_column("rule", no_wrap=True, overflow="ellipsis", min_width=6)
    log.add_column("value", no_wrap=True, justify="right")
    log.add_column("alarm now", no_wrap=True, min_width=7)
    for t in state.transitions:
        log.add_row(
            f"{t.ts:%H:%M:%S}",
            t.kind,
            Text(t.tier.colour, TIER_STYLE[t.tier]),
            t.sensor,
            t.rule,
            "" if t.value is None else f"{t.value:.4g}",
            STATE_WORD.get(t.state, t.state),
        )
    if not state.transitions:
        log.add_row("", "no alarm events yet", "", "", "", "", "")

    access = Text("\n".join(access_lines(state.api_url, state.token)[:3]))
    parts: list[RenderableType] = [
        header,
        Panel(Group(tiles, summary), title="active alarms", border_style="dim"),
        Panel(access, title="query it", border_style="dim"),
        Panel(log, title="latest transitions", border_style="dim"),
    ]
    parts.extend(Text(note, "dim") for note in state.notes)
    return Group(*parts)
