"""The notifier: alarm events out to crews (MQTT), webhooks, and escalation (`hazwatch notify`).

One notifier runs per database (a session advisory lock; a second one waits as a standby). It
LISTENs on `hazwatch_alarm_events` only to wake up: the events themselves are read from
`alarm_events` after a cursor (`notifier_cursor`), so nothing is missed while it was down.

- Dispatch: each event after the cursor whose alarm is not suppressed (shelved until after the
  event, or out of service, judged when the event is dispatched) gets one `notifications` row per
  target, status `pending`, in the same transaction that moves the cursor. Targets: the MQTT
  topic `<topic_root>/<site>/alarms` (QoS 1) and every URL in `notify.webhooks`.
- Delivery: one worker per target (all MQTT topics share one, each URL has its own, so a dead
  webhook never delays the crews) sends its pending rows in order, each up to
  `webhook_attempts` times with doubling backoff, and records every attempt in the row
  (`attempts`, `last_error`), ending `delivered` or `failed`. The unique index on (event,
  channel, target) makes delivery once-only across restarts, except for a crash between the
  broker's PUBACK and the row's update: then the message is sent again, with the same
  `event_id` for the receiver to drop.
- Escalation: every `escalation_check_s`, an alarm that reached orange or red and is still
  unacknowledged (active_unacked or cleared_unacked) `escalation_after_s` after it was raised,
  and is not suppressed, gets one `escalation` row per escalation target (MQTT
  `<topic_root>/<site>/escalations` and each URL in `notify.escalation_webhooks`), once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerting.store import CHANNEL
from hazwatch.config import DatabaseSettings, MqttSettings, NotifySettings
from hazwatch.db import UNAVAILABLE_ERRORS, connect, create_pool
from hazwatch.domain import Tier
from hazwatch.errors import HazwatchError

log = logging.getLogger(__name__)

LOCK_KEY = 0x48574E54  # "HWNT": one notifier per database
BATCH = 500
MQTT_TOPIC_ALARMS = "alarms"
MQTT_TOPIC_ESCALATIONS = "escalations"


class DeliveryFailed(HazwatchError):
    """One attempt to deliver a notification did not succeed."""


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


# MQTT --------------------------------------------------------------------------------------------


class MqttAlarmPublisher:
    """One paho-mqtt 2.x connection that publishes at QoS 1 and waits for the PUBACK.

    paho runs its network loop in its own thread and reconnects by itself; `publish` hands the
    wait for the acknowledgement to a worker thread so the event loop never blocks.
    """

    def __init__(self, settings: MqttSettings, *, client_id: str, ack_timeout_s: float) -> None:
        self._settings = settings
        self._ack_timeout_s = ack_timeout_s
        protocol = mqtt.MQTTv5 if settings.protocol == 5 else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        if settings.tls_ca_file is not None:
            self._client.tls_set(ca_certs=settings.tls_ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(
            min_delay=max(1, int(settings.reconnect_min_s)), max_delay=int(settings.reconnect_max_s)
        )
        self._connected = threading.Event()
        self._closing = False
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            self._connected.set()
        else:
            log.warning("notifier: MQTT broker refused the connection: %s", reason)

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        self._connected.clear()
        if self._closing:
            log.debug("notifier: MQTT disconnected (%s)", reason)
        else:
            log.warning("notifier: MQTT connection lost (%s); paho reconnects", reason)

    async def __aenter__(self) -> MqttAlarmPublisher:
        self._client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s
        )
        self._client.loop_start()
        await asyncio.to_thread(self._connected.wait, self._ack_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def publish(self, topic: str, payload: bytes) -> None:
        if not self._connected.is_set():
            raise DeliveryFailed("not connected to the MQTT broker")
        info = self._client.publish(topic, payload, qos=1)
        try:
            await asyncio.to_thread(info.wait_for_publish, self._ack_timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryFailed(f"MQTT publish failed: {exc}") from exc
        if not info.is_published():
            raise DeliveryFailed(f"no PUBACK within {self._ack_timeout_s:g} s")


# SQL ---------------------------------------------------------------------------------------------

_EVENTS = """
SELECT e.event_id, e.alarm_id, e.ts, s.key AS site,
       (a.out_of_service OR COALESCE(a.shelved_until > e.ts, false)) AS suppressed
FROM alarm_events e
JOIN alarms a USING (alarm_id)
JOIN sites s ON s.site_id = a.site_id
WHERE e.event_id > $1
ORDER BY e.event_id
LIMIT $2
"""

_PENDING = """
SELECT notification_id, event_id, alarm_id, channel, target, attempts
FROM notifications
WHERE status = 'pending' AND CASE WHEN $1::text IS NULL THEN target !~ '^https?://'
                                  ELSE target = $1 END
ORDER BY notification_id
LIMIT $2
"""

_EVENT_PAYLOAD = """
SELECT e.event_id, e.alarm_id, e.kind, e.ts, e.tier, e.value, e.actor, e.comment,
       s.key AS site, t.key AS asset, n.key AS sensor, a.rule, a.state, a.max_tier, a.predicted
FROM alarm_events e
JOIN alarms a USING (alarm_id)
JOIN sites s ON s.site_id = a.site_id
JOIN assets t ON t.asset_id = a.asset_id
LEFT JOIN sensors n ON n.sensor_id = a.sensor_id
WHERE e.event_id = $1
"""

_ALARM_PAYLOAD = """
SELECT a.alarm_id, a.rule, a.state, a.tier, a.max_tier, a.value, a.raised_at, a.predicted,
       s.key AS site, t.key AS asset, n.key AS sensor
FROM alarms a
JOIN sites s ON s.site_id = a.site_id
JOIN assets t ON t.asset_id = a.asset_id
LEFT JOIN sensors n ON n.sensor_id = a.sensor_id
WHERE a.alarm_id = $1
"""

_TO_ESCALATE = """
SELECT a.alarm_id, s.key AS site
FROM alarms a JOIN sites s ON s.site_id = a.site_id
WHERE a.state IN ('active_unacked', 'cleared_unacked')
  AND a.max_tier >= $1
  AND a.raised_at <= $2
  AND NOT a.out_of_service
  AND (a.shelved_until IS NULL OR a.shelved_until <= $3)
  AND NOT EXISTS (SELECT 1 FROM notifications n
                  WHERE n.alarm_id = a.alarm_id AND n.channel = 'escalation')
ORDER BY a.alarm_id
"""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def event_message(r: Mapping[str, Any]) -> bytes:
    """The JSON a crew receives for one lifecycle event."""
    return orjson.dumps(
        {
            "type": "alarm_event",
            "event_id": r["event_id"],
            "alarm_id": r["alarm_id"],
            "kind": r["kind"],
            "ts": r["ts"].isoformat(),
            "site": r["site"],
            "asset": r["asset"],
            "sensor": r["sensor"],
            "rule": r["rule"],
            "state": r["state"],
            "tier": r["tier"],
            "colour": Tier(r["tier"]).colour,
            "max_tier": r["max_tier"],
            "value": _finite(r["value"]),
            "predicted": r["predicted"],
            "actor": r["actor"],
            "comment": r["comment"],
        }
    )


def escalation_message(r: Mapping[str, Any], now: datetime) -> bytes:
    return orjson.dumps(
        {
            "type": "escalation",
            "alarm_id": r["alarm_id"],
            "site": r["site"],
            "asset": r["asset"],
            "sensor": r["sensor"],
            "rule": r["rule"],
            "state": r["state"],
            "tier": r["tier"],
            "max_tier": r["max_tier"],
            "colour": Tier(r["max_tier"]).colour,
            "value": _finite(r["value"]),
            "raised_at": r["raised_at"].isoformat(),
            "unacknowledged_s": round((now - r["raised_at"]).total_seconds()),
        }
    )


# The service -------------------------------------------------------------------------------------


@dataclass
class Notifier:
    database: DatabaseSettings
    settings: NotifySettings
    topic_root: str
    publisher: MqttAlarmPublisher
    http: httpx.AsyncClient
    clock: Callable[[], datetime]
    _wake: dict[str | None, asyncio.Event] = field(default_factory=dict)
    _dispatch: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def worker_keys(self) -> list[str | None]:
        """None is the MQTT worker; each URL has its own."""
        urls = dict.fromkeys([*self.settings.webhooks, *self.settings.escalation_webhooks])
        return [None, *urls]

    async def run(self) -> None:
        """Run until cancelled; raises DatabaseUnavailable if the database cannot be reached."""
        lock_conn = await connect(self.database)
        try:
            log.info("notifier: waiting for the notifier lock")
            await lock_conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
            await lock_conn.add_listener(CHANNEL, self._on_notify)
            pool = await create_pool(self.database)
            try:
                async with pool.acquire() as conn:
                    await self._init_cursor(conn)
                self._wake = {key: asyncio.Event() for key in self.worker_keys}
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._forever(pool, self._dispatch, self.dispatch_once))
                    tasks.create_task(self._escalate_forever(pool))
                    for key, event in self._wake.items():
                        tasks.create_task(self._forever(pool, event, self._worker(key)))
                    self.running.set()
            finally:
                await pool.close()
        finally:
            self.running.clear()
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await lock_conn.close(timeout=2)

    def _on_notify(self, *_args: object) -> None:
        self._dispatch.set()

    async def _forever(
        self,
        pool: asyncpg.Pool,
        wake: asyncio.Event,
        step: Callable[[asyncpg.Connection], Any],
    ) -> None:
        """Run `step` until it finds nothing to do, then wait for a wake-up (or 5 s, so that a
        lost notification or a database outage delays work but never stops it)."""
        wake.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=5.0)
            wake.clear()
            try:
                async with pool.acquire() as conn:
                    while await step(conn):
                        pass
            except UNAVAILABLE_ERRORS as exc:
                log.warning("notifier: database unavailable (%s); retrying", exc)

    async def _init_cursor(self, conn: asyncpg.Connection) -> None:
        """A first start begins at the newest event: history is not sent to the crews."""
        created = await conn.fetchval(
            """INSERT INTO notifier_cursor (last_event_id)
               SELECT COALESCE(max(event_id), 0) FROM alarm_events
               ON CONFLICT DO NOTHING RETURNING last_event_id"""
        )
        if created is not None:
            log.info("notifier: first start; notifying events after %d", created)

    def _targets(self, site: str) -> list[tuple[str, str]]:
        topic = f"{self.topic_root}/{site}/{MQTT_TOPIC_ALARMS}"
        return [("mqtt", topic), *(("webhook", url) for url in self.settings.webhooks)]

    async def dispatch_once(self, conn: asyncpg.Connection) -> bool:
        """Turn the next events after the cursor into pending deliveries; True if it did any."""
        async with conn.transaction():
            cursor = await conn.fetchval("SELECT last_event_id FROM notifier_cursor FOR UPDATE")
            events = await conn.fetch(_EVENTS, cursor, BATCH)
            if not events:
                return False
            rows = [
                (e["event_id"], e["alarm_id"], channel, target)
                for e in events
                if not e["suppressed"]
                for channel, target in self._targets(e["site"])
            ]
            await conn.executemany(
                """INSERT INTO notifications (event_id, alarm_id, channel, target, status)
                   VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING""",
                rows,
            )
            await conn.execute(
                "UPDATE notifier_cursor SET last_event_id = $1, updated_at = now()",
                events[-1]["event_id"],
            )
        skipped = sum(1 for e in events if e["suppressed"])
        log.debug("notifier: dispatched %d events (%d suppressed)", len(events), skipped)
        for event in self._wake.values():
            event.set()
        return True

    async def escalate_once(self, conn: asyncpg.Connection) -> int:
        """Queue escalations for the alarms that are due; returns how many alarms."""
        now = self.clock()
        due = await conn.fetch(
            _TO_ESCALATE,
            int(Tier.ORANGE),
            now - timedelta(seconds=self.settings.escalation_after_s),
            now,
        )
        for alarm in due:
            targets = [
                f"{self.topic_root}/{alarm['site']}/{MQTT_TOPIC_ESCALATIONS}",
                *self.settings.escalation_webhooks,
            ]
            await conn.executemany(
                """INSERT INTO notifications (alarm_id, channel, target, status)
                   VALUES ($1, 'escalation', $2, 'pending') ON CONFLICT DO NOTHING""",
                [(alarm["alarm_id"], target) for target in targets],
            )
        if due:
            log.info("notifier: escalating %d alarm(s)", len(due))
            for event in self._wake.values():
                event.set()
        return len(due)

    async def _escalate_forever(self, pool: asyncpg.Pool) -> None:
        while True:
            try:
                async with pool.acquire() as conn:
                    await self.escalate_once(conn)
            except UNAVAILABLE_ERRORS as exc:
                log.warning("notifier: escalation check skipped (%s)", exc)
            await asyncio.sleep(self.settings.escalation_check_s)

    def _worker(self, key: str | None) -> Callable[[asyncpg.Connection], Any]:
        async def step(conn: asyncpg.Connection) -> bool:
            if key is None and not self.publisher.connected:
                return False  # attempts are not spent while the broker is away
            rows = await conn.fetch(_PENDING, key, 50)
            for row in rows:
                await self.deliver(conn, row)
            return bool(rows)

        return step

    async def _message(self, conn: asyncpg.Connection, row: Mapping[str, Any]) -> bytes:
        if row["channel"] == "escalation":
            alarm = await conn.fetchrow(_ALARM_PAYLOAD, row["alarm_id"])
            return escalation_message(alarm, self.clock())
        return event_message(await conn.fetchrow(_EVENT_PAYLOAD, row["event_id"]))

    async def _send(self, target: str, message: bytes) -> None:
        if not is_url(target):
            await self.publisher.publish(target, message)
            return
        try:
            response = await self.http.post(
                target,
                content=message,
                headers={"content-type": "application/json"},
                timeout=self.settings.webhook_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise DeliveryFailed(f"HTTP {response.status_code}")

    async def deliver(self, conn: asyncpg.Connection, row: Mapping[str, Any]) -> bool:
        """Attempt one pending delivery until it succeeds or runs out of attempts; every
        attempt is recorded. Returns whether it was delivered."""
        message = await self._message(conn, row)
        attempts = row["attempts"]
        delay = self.settings.webhook_backoff_s * 2 ** max(attempts - 1, 0)
        while attempts < self.settings.webhook_attempts:
            if attempts:
                await asyncio.sleep(delay)
                delay *= 2
            attempts += 1
            try:
                await self._send(row["target"], message)
            except DeliveryFailed as exc:
                final = attempts >= self.settings.webhook_attempts
                await conn.execute(
                    """UPDATE notifications SET attempts = $2, last_error = $3, status = $4
                       WHERE notification_id = $1""",
                    row["notification_id"], attempts, str(exc)[:500],
                    "failed" if final else "pending",
                )  # fmt: skip
                log.warning("notifier: %s to %s, attempt %d: %s", row["channel"],
                            row["target"], attempts, exc)  # fmt: skip
                continue
            await conn.execute(
                """UPDATE notifications SET attempts = $2, status = 'delivered',
                          delivered_at = $3
                   WHERE notification_id = $1""",
                row["notification_id"],
                attempts,
                self.clock(),
            )
            return True
        return False
