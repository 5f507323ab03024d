"""The operator console in a real browser (Debian's chromium via Playwright) against the real app,
database and live stream: sign in, risk tiles, the live alarm list with its pop-up and sound,
acknowledge with a comment, a refused double acknowledgement, role-hidden buttons, shelve and
assign, the history view, and the stream's reconnect indicator.

Set HAZWATCH_CONSOLE_SCREENSHOT=/some/dir to keep a screenshot of the live page to look at.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import expect

from alerting import tracker
from alerting.rules import Rule
from alerting.tracker import Subject
from alerting.transitions import Transition
from tests.api.conftest import insert_alarm
from tests.browser.conftest import Console

pytestmark = pytest.mark.integration

RED, ORANGE, YELLOW, BLUE = 4, 3, 2, 1


def ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def engine_raises(conn: asyncpg.Connection, sensor: str, tier: int, value: float) -> int:
    """A new alarm exactly as the engine opens one: tracker.record writes the episode and its
    `raised` event and notifies `hazwatch_alarm_events` at commit."""
    r = await conn.fetchrow(
        """SELECT n.sensor_id, n.asset_id, a.key AS asset, s.site_id, s.key AS site
           FROM sensors n JOIN assets a USING (asset_id) JOIN sites s ON s.site_id = a.site_id
           WHERE n.key = $1""",
        sensor,
    )
    subject = Subject(r["sensor_id"], sensor, r["asset_id"], r["asset"], r["site_id"], r["site"])
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    transition = Transition(Rule.HIGH, 0, now_us, 0, tier, value, False)
    async with conn.transaction():
        events = await tracker.record(conn, [(subject, "high", transition)])
    return events[0].alarm_id


async def snapshot(console: Console, name: str, *, full_page: bool = False) -> None:
    """A screenshot to look at, when HAZWATCH_CONSOLE_SCREENSHOT names a directory."""
    where = os.environ.get("HAZWATCH_CONSOLE_SCREENSHOT")
    if where:
        await console.page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=full_page)


def row(console: Console, alarm_id: int, table: str = "#active-table") -> str:
    return f"{table} tbody tr[data-alarm-id='{alarm_id}']"


async def test_sign_in_risk_tiles_and_a_new_alarm_live(console: Console) -> None:
    page = console.page
    red = await insert_alarm(console.conn, "gh1-det/co1", tier=RED, raised_at=ago(9))
    yellow = await insert_alarm(console.conn, "ps1-det/co1", tier=YELLOW, raised_at=ago(5))
    blue = await insert_alarm(
        console.conn, "room1-det/lel", tier=BLUE, state="active_acked", raised_at=ago(1)
    )

    await page.goto(f"{console.base}/console")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    await page.fill("#token", console.tokens["operator"])
    await page.keyboard.press("Enter")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#who-name")).to_have_text("operator")
    await expect(page.locator("#who-role")).to_have_text("operator")
    # the token is in this tab's session storage, never in the address
    assert console.tokens["operator"] not in page.url
    stored = await page.evaluate("sessionStorage.getItem('hazwatch.console.token')")
    assert stored == console.tokens["operator"]

    # risk tiles: colour class and the colour's name in text, static and live both shown
    gh1 = page.locator("#risk .tile[data-asset=gh1]")
    await expect(gh1).to_have_class("tile tier-4")
    await expect(gh1.locator(".tile-level")).to_have_text("RED · I")
    await expect(gh1).to_contain_text("live RED")
    ps1 = page.locator("#risk .tile[data-asset=ps1]")
    await expect(ps1).to_have_class("tile tier-2")
    await expect(ps1).to_contain_text("static YELLOW · live YELLOW")
    room1 = page.locator("#risk .tile[data-asset=room1]")
    await expect(room1.locator(".tile-level")).to_have_text("BLUE · IV")
    await expect(page.locator("#risk .risk-site[data-site=north] h3 .badge")).to_have_text(
        "RED · I"
    )

    # active alarms: highest tier first; unacknowledged rows stand out
    rows = page.locator("#active-table tbody tr")
    await expect(rows).to_have_count(3)
    assert await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.alarmId))") == [
        red, yellow, blue,
    ]  # fmt: skip
    await expect(page.locator(row(console, red))).to_have_class("unacked")
    await expect(page.locator(row(console, blue))).to_have_class("acked")
    await expect(page.locator(row(console, red)).locator(".badge")).to_have_text("RED · I")

    # sound needs a gesture: the operator enables it
    await page.click("#sound")
    await expect(page.locator("#sound")).to_have_attribute("data-mode", "on")
    await page.evaluate("window.sameDocument = true")

    new = await engine_raises(console.conn, "gh1-det/co2", ORANGE, 85.0)
    await expect(page.locator(row(console, new))).to_be_visible()
    banner = page.locator(f".banner[data-alarm-id='{new}']")
    await expect(banner).to_contain_text("NEW ORANGE · II ALARM")
    await expect(banner).to_contain_text("gh1-det/co2")
    await expect(page.locator("#sound")).to_have_attribute("data-played", "1")
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    assert await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.alarmId))") == [
        red, new, yellow, blue,
    ]  # fmt: skip
    await expect(page).to_have_title("(1 new) HazWatch console")

    await snapshot(console, "console", full_page=True)

    # "Open" on the banner shows the alarm's history and dismisses the banner
    await banner.locator(".banner-open").click()
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-title")).to_contain_text(f"Alarm {new}")
    await expect(page.locator("#events-table tbody tr[data-kind=raised]")).to_have_count(1)
    await expect(banner).to_have_count(0)
    await snapshot(console, "console-detail")


async def test_acknowledge_with_comment_then_a_double_ack_is_refused(console: Console) -> None:
    page = console.page
    alarm = await insert_alarm(console.conn, "gh1-det/co1", tier=RED, raised_at=ago(3))
    await console.sign_in("operator")
    await page.click(f"{row(console, alarm)} .open-detail")
    await expect(page.locator("#detail-state")).to_have_attribute("data-state", "active_unacked")
    await expect(page.locator("#ack-required")).to_have_text("(required for orange and red)")

    # a red alarm needs a comment: nothing is sent without one
    await page.click("#ack-form button[type=submit]")
    await expect(page.locator("#action-error")).to_contain_text("comment is required")
    assert await console.conn.fetchval(
        "SELECT count(*) FROM alarm_events WHERE alarm_id = $1 AND kind = 'acknowledged'", alarm
    ) == 0  # fmt: skip

    await page.fill("#ack-comment", "crew 3 sent, valve V12 closed")
    await page.click("#ack-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("Acknowledged")
    await expect(page.locator("#detail-state")).to_have_attribute("data-state", "active_acked")
    await expect(page.locator("#ack-form")).to_be_hidden()  # nothing left to acknowledge
    await expect(page.locator(row(console, alarm))).to_have_class("acked selected")
    state, acked_by = await console.conn.fetchrow(
        "SELECT state, acked_by FROM alarms WHERE alarm_id = $1", alarm
    )
    assert (state, acked_by) == ("active_acked", "operator")
    acks = await console.conn.fetch(
        "SELECT actor, comment FROM alarm_events WHERE alarm_id = $1 AND kind = 'acknowledged'",
        alarm,
    )
    assert [tuple(a) for a in acks] == [("operator", "crew 3 sent, valve V12 closed")]

    # Another user acknowledges the alarm this operator is looking at: the page says so (the
    # panel does not rearrange itself under the operator's hands), and pressing Acknowledge
    # anyway shows the API's refusal.
    other = await engine_raises(console.conn, "ps1-det/co1", YELLOW, 45.0)
    await page.click(f"{row(console, other)} .open-detail")
    await expect(page.locator("#ack-required")).to_have_text("(optional)")
    async with httpx.AsyncClient(base_url=console.base) as client:
        r = await client.post(
            f"/api/v1/alarms/{other}/ack",
            headers={"Authorization": f"Bearer {console.tokens['crew']}"},
            json={"comment": "seen from the field"},
        )
        assert r.status_code == 200, r.text
    await expect(page.locator("#detail-changed")).to_contain_text("acknowledged by crew")
    console.expect_problem("status of 409")
    await page.click("#ack-form button[type=submit]")
    await expect(page.locator("#action-error")).to_contain_text(
        f"alarm {other} is active_acked: nothing to acknowledge"
    )
    await expect(page.locator("#action-error")).to_contain_text("HTTP 409 conflict")
    assert await console.conn.fetchval(
        "SELECT count(*) FROM alarm_events WHERE alarm_id = $1 AND kind = 'acknowledged'", other
    ) == 1  # fmt: skip


async def test_a_bad_token_is_refused_and_a_viewer_sees_no_action_buttons(
    console: Console,
) -> None:
    page = console.page
    alarm = await insert_alarm(console.conn, "gh1-det/co1", tier=ORANGE, raised_at=ago(3))
    console.expect_problem("status of 401")
    await page.goto(f"{console.base}/console")
    await page.fill("#token", "hw_notarealtokennotarealtoken")
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#signin-error")).to_contain_text("Sign-in failed")
    await expect(page.locator("#signin-error")).to_contain_text("HTTP 401")
    await expect(page.locator("#app")).to_be_hidden()
    await console.sign_in("viewer")
    await expect(page.locator("#who-role")).to_have_text("viewer")
    await page.click(f"{row(console, alarm)} .open-detail")
    await expect(page.locator("#events-table tbody tr[data-kind=raised]")).to_have_count(1)
    for name in ("Acknowledge", "Shelve", "Unshelve", "Assign", "Add comment"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    await expect(page.locator(".actions form:visible")).to_have_count(0)


async def test_crew_may_acknowledge_and_comment_but_not_shelve(console: Console) -> None:
    page = console.page
    alarm = await insert_alarm(console.conn, "gh1-det/co1", tier=BLUE, raised_at=ago(3))
    await console.sign_in("crew")
    await page.click(f"{row(console, alarm)} .open-detail")
    await expect(page.locator("#ack-form")).to_be_visible()
    await expect(page.locator("#comment-form")).to_be_visible()
    await expect(page.locator("#shelve-form")).to_be_hidden()
    await expect(page.locator("#assign-form")).to_be_hidden()
    # blue: the comment is optional
    await page.click("#ack-form button[type=submit]")
    await expect(page.locator("#detail-state")).to_have_attribute("data-state", "active_acked")
    assert await console.conn.fetchval(
        "SELECT comment FROM alarm_events WHERE alarm_id = $1 AND kind = 'acknowledged'", alarm
    ) is None  # fmt: skip


async def test_shelve_assign_and_comment_from_the_page(console: Console) -> None:
    page = console.page
    alarm = await insert_alarm(console.conn, "gh1-det/co1", tier=ORANGE, raised_at=ago(3))
    await console.sign_in("operator")
    gh1 = page.locator("#risk .tile[data-asset=gh1]")
    await expect(gh1).to_contain_text("live ORANGE")
    await page.click(f"{row(console, alarm)} .open-detail")

    await page.click("#shelve-form button[type=submit]")
    await expect(page.locator("#action-error")).to_have_text("A shelve needs a reason.")
    await page.select_option("#shelve-duration", "14400")
    await page.fill("#shelve-reason", "detector replacement, work order 2211")
    await page.click("#shelve-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("Shelved")
    await expect(page.locator(row(console, alarm))).to_contain_text("SHELVED")
    await expect(gh1).to_contain_text("1 shelved / out of service")
    await expect(gh1).to_contain_text("live NORMAL")  # a shelved alarm leaves the colour

    await page.click("#assign-me")
    await expect(page.locator(row(console, alarm))).to_contain_text("operator")
    await page.fill("#comment-text", "holder top checked, no leak found")
    await page.click("#comment-form button[type=submit]")
    await expect(page.locator("#events-table tbody tr[data-kind=commented]")).to_contain_text(
        "holder top checked"
    )
    await page.click("#unshelve-form button[type=submit]")
    await expect(page.locator("#events-table tbody tr[data-kind=unshelved]")).to_have_count(1)
    await expect(page.locator(row(console, alarm))).not_to_contain_text("SHELVED")
    await expect(gh1).to_contain_text("live ORANGE")

    shelved_until, assignee = await console.conn.fetchrow(
        "SELECT shelved_until, assignee FROM alarms WHERE alarm_id = $1", alarm
    )
    assert shelved_until is None
    assert assignee == "operator"
    kinds = await console.conn.fetch(
        "SELECT kind, comment FROM alarm_events WHERE alarm_id = $1 ORDER BY event_id", alarm
    )
    assert [k["kind"] for k in kinds] == ["raised", "shelved", "assigned", "commented", "unshelved"]
    assert kinds[1]["comment"] == "detector replacement, work order 2211"
    await snapshot(console, "actions")
    until = await console.conn.fetchval(
        "SELECT details->>'until' FROM alarm_events WHERE alarm_id = $1 AND kind = 'shelved'",
        alarm,
    )
    shelved_for = datetime.fromisoformat(until) - datetime.now(UTC)
    assert timedelta(hours=3, minutes=55) < shelved_for <= timedelta(hours=4)


async def test_history_filters_and_pages(console: Console) -> None:
    page = console.page
    for i in range(55):
        await insert_alarm(console.conn, "gh1-det/co1", state="closed", tier=1 + i % 4,
                           raised_at=ago(60 + i))  # fmt: skip
    south = await insert_alarm(console.conn, "ps1-det/co1", tier=RED, raised_at=ago(30))
    await console.sign_in("operator")
    await page.click("#tab-history")
    await expect(page.locator("#history-page")).to_have_text("1–50 of 56")
    await expect(page.locator("#history-prev")).to_be_disabled()
    await page.click("#history-next")
    await expect(page.locator("#history-page")).to_have_text("51–56 of 56")
    await expect(page.locator("#history-next")).to_be_disabled()
    await snapshot(console, "history")

    await page.select_option("#history-form select[name=site]", "south")
    await page.click("#history-form button[type=submit]")
    await expect(page.locator("#history-page")).to_have_text("1–1 of 1")
    await expect(page.locator(row(console, south, "#history-table"))).to_be_visible()

    await page.select_option("#history-form select[name=site]", "")
    await page.select_option("#history-form select[name=state]", "closed")
    await page.select_option("#history-form select[name=min_tier]", "4")
    await page.click("#history-form button[type=submit]")
    await expect(page.locator("#history-page")).to_have_text("1–13 of 13")  # 55 // 4 + 1 reds

    # a time window, entered in the browser's time zone
    since = (ago(70.5)).astimezone().strftime("%Y-%m-%dT%H:%M")
    await page.select_option("#history-form select[name=min_tier]", "")
    await page.fill("#history-form input[name=since]", since)
    await page.click("#history-form button[type=submit]")
    expected = await console.conn.fetchval(
        "SELECT count(*) FROM alarms WHERE state = 'closed' AND raised_at >= $1",
        datetime.fromisoformat(since).astimezone(UTC),
    )
    await expect(page.locator("#history-page")).to_have_text(f"1–{expected} of {expected}")


async def test_stream_reconnects_after_a_server_restart(console: Console) -> None:
    page = console.page
    await console.sign_in("viewer")
    console.expect_problem("WebSocket connection to")
    console.expect_problem("Failed to load resource")
    await console.server.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#conn-text")).to_contain_text("RECONNECTING: retry in")
    # raised while nobody could tell the page: it must still pop up once the page is back
    missed = await insert_alarm(console.conn, "ps1-det/co1", tier=ORANGE, raised_at=ago(0.1))
    await console.server.start()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
    await expect(page.locator(row(console, missed))).to_be_visible()
    await expect(page.locator(f".banner[data-alarm-id='{missed}']")).to_contain_text(
        "NEW ORANGE · II ALARM"
    )
    alarm = await engine_raises(console.conn, "gh1-det/co1", RED, 200.0)
    await expect(page.locator(row(console, alarm))).to_be_visible()
    await expect(page.locator(f".banner[data-alarm-id='{alarm}']")).to_contain_text(
        "NEW RED · I ALARM"
    )
