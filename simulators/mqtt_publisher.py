"""Publishes a reading source over MQTT per the HazWatch contract, paced on a virtual clock.

One paho-mqtt client per device, as real field devices and gateways connect: each has its own
last will (`offline`, retained, QoS 1, on its status topic) and announces `online` (retained)
every time it connects, so the broker marks exactly the device whose connection died. The cost
is a network thread per device: fine for the demo city and for load tests of a few hundred
devices; beyond that, run several publishers (`--devices`/`--sites` partitions).

Telemetry goes out at QoS 1. Each client has at most `max_inflight` unacknowledged messages:
a full window blocks the publishing loop (backpressure, nothing is queued without bound). Every
PUBACK is counted; the report says how many messages were published, acknowledged, rejected by
the broker (a PUBACK reason code >= 0x80) and still unacknowledged when the run ended.

Virtual time runs `speed` times faster than real time from the source's start (speed 0: no
pacing, as fast as the broker acknowledges). Stop with `stop()` from any thread, or let
`duration_s` of virtual time pass.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from hazwatch.errors import SimulatorError
from simulators.delivery import Delivery
from simulators.payload import OFFLINE, ONLINE, encode, status_topic, telemetry_topic
from simulators.simulation import DeviceReading
from simulators.source import ReadingSource

log = logging.getLogger(__name__)

ASAP_STEP_MS = 10_000  # virtual time per loop when not pacing
MAX_SLEEP_S = 0.25  # the loop looks at stop() and batch ages at least this often


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    topic_root: str = "hazwatch/v1"
    client_id_prefix: str | None = None  # default: derived from the topic root
    keepalive_s: int = 30
    speed: float = 1.0  # virtual seconds per real second; 0 = as fast as possible
    duration_s: float | None = None  # virtual; None = until stop()
    batch: int = 1  # readings per message (an array payload when > 1)
    batch_max_delay_s: float = 1.0  # real time a reading may wait for its batch to fill
    max_inflight: int = 100  # per device
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0  # at the end, wait this long for the last PUBACKs

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must not be negative, got {self.speed}")
        if self.batch < 1 or self.max_inflight < 1:
            raise ValueError("batch and max_inflight must be at least 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")


@dataclass(frozen=True, slots=True)
class PublishReport:
    messages: int  # telemetry PUBLISH packets sent
    readings: int  # readings they carried (duplicates included)
    acked: int
    rejected: int
    unacked: int  # neither acknowledged nor rejected when the run ended
    unsent: int  # readings not sent because the run was stopped while the window was full
    duplicated: int  # extra copies sent by duplicate faults
    delayed: int  # readings held back by reorder faults
    virtual_s: float  # virtual time covered
    real_s: float
    last_seq: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Messages the broker did not take (rejected or never acknowledged)."""
        return self.rejected + self.unacked


class _Link:
    """One device's connection: its client, will, status and inflight window."""

    def __init__(self, device: str, site: str, config: PublisherConfig, prefix: str) -> None:
        self.device = device
        self.config = config
        self.telemetry = telemetry_topic(config.topic_root, site, device)
        self.status = status_topic(config.topic_root, site, device)
        self._client_id = f"{prefix}-{device}"
        self.client = self._new_client()
        self.connected = threading.Event()
        self.refused: str | None = None
        # Our lock is never held while calling into paho: paho holds its own lock while it
        # runs on_publish, which takes ours.
        self._window = threading.Condition()
        self._reserved = 0  # publish() calls between taking a slot and learning their mid
        self._waiting: set[int] = set()  # telemetry mids sent, not yet acknowledged
        self._early: dict[int, bool] = {}  # acks that came before their mid was registered
        self.messages = self.readings = self.acked = self.rejected = 0
        self.down = False  # dropped on purpose (dropout with disconnect)
        self._warned = False

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5
        )
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        client.will_set(self.status, OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # paho callbacks (its network thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.warning("broker refused %s: %s", self.device, reason)
            return
        self.refused = None
        self._warned = False
        client.publish(self.status, ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self.connected.clear()
        if not self.down and not self._warned:
            self._warned = True
            log.warning(
                "device %s lost its broker connection (%s); reconnecting", self.device, reason
            )

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker rejected a message of %s: %s", self.device, reason)
        with self._window:
            if mid in self._waiting:
                self._settle(mid, failed=reason.is_failure)
            else:  # a status message, or an ack faster than publish() returned
                self._early[mid] = reason.is_failure

    def _settle(self, mid: int, *, failed: bool) -> None:
        """Count one telemetry message as done (called with the window lock held)."""
        self._waiting.discard(mid)
        if failed:
            self.rejected += 1
        else:
            self.acked += 1
        self._window.notify_all()

    # the publishing thread ---------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self.client.loop_start()

    def publish(self, readings: Sequence[DeviceReading], stop: threading.Event) -> bool:
        """Send one message; blocks while the inflight window is full. False if stopped."""
        payload = encode(readings)
        # While the connection is down, wait for it rather than let paho queue without bound;
        # messages sent before a reconnect's CONNACK could also overtake each other.
        while not self.connected.wait(MAX_SLEEP_S):
            if stop.is_set():
                return False
        with self._window:
            while len(self._waiting) + self._reserved >= self.config.max_inflight:
                if stop.is_set():
                    return False
                self._window.wait(MAX_SLEEP_S)
            self._reserved += 1
        # Disconnected since: paho keeps the message and sends it after reconnecting.
        info = self.client.publish(self.telemetry, payload, qos=1)
        with self._window:
            self._reserved -= 1
            self.messages += 1
            self.readings += len(readings)
            self._waiting.add(info.mid)
            early = self._early.pop(info.mid, None)
            if early is not None:
                self._settle(info.mid, failed=early)
        return True

    @property
    def unacked(self) -> int:
        with self._window:
            return len(self._waiting)

    def drain(self, deadline: float, clock: Callable[[], float]) -> None:
        with self._window:
            while self._waiting and clock() < deadline:
                self._window.wait(min(MAX_SLEEP_S, max(0.0, deadline - clock())))

    def drop_with_will(self, clock: Callable[[], float]) -> None:
        """Go silent the way a dying device does: the broker publishes our will."""
        self.drain(clock() + self.config.drain_timeout_s, clock)
        self.down = True
        will = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        self.client.disconnect(reasoncode=will)
        self.client.loop_stop()

    def come_back(self) -> None:
        """Reconnect like a rebooted device: a new client (and connection)."""
        self.down = False
        self.client = self._new_client()
        self.start()

    def close(self, clock: Callable[[], float]) -> None:
        was_down, self.down = self.down, True  # a disconnect from here on is ours
        if not was_down:
            deadline = clock() + self.config.drain_timeout_s
            self.drain(deadline, clock)
            info = self.client.publish(self.status, OFFLINE, qos=1, retain=True)
            if self.connected.is_set():
                info.wait_for_publish(max(0.1, deadline - clock()))
            self.client.disconnect()
        self.client.loop_stop()


class MqttPublisher:
    """Publishes `source` per `config`; `run()` blocks until the end, `stop()` ends it early.

    From asyncio: `report = await asyncio.to_thread(publisher.run)`, and `publisher.stop()`."""

    def __init__(
        self,
        source: ReadingSource,
        config: PublisherConfig,
        *,
        delivery: Delivery | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.config = config
        self.delivery = delivery
        self._clock = clock
        self._stop = threading.Event()
        prefix = config.client_id_prefix or _default_prefix(config.topic_root)
        self.links = {
            device: _Link(device, site, config, prefix)
            for device, site in source.device_sites.items()
        }
        self._pending: dict[str, list[DeviceReading]] = {d: [] for d in self.links}
        self._pending_since: dict[str, float] = {}
        self._last_seq: dict[str, int] = {}
        self._unsent = 0
        self.virtual_ms = source.start_ms

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> PublishReport:
        started = self._clock()
        self._connect()
        try:
            self._loop(started)
        finally:
            self._close()
        return self._report(started)

    # -------------------------------------------------------------------------------------

    def _connect(self) -> None:
        for link in self.links.values():
            link.start()
        deadline = self._clock() + self.config.connect_timeout_s
        for link in self.links.values():
            while not link.connected.wait(MAX_SLEEP_S):
                if self._stop.is_set():
                    return
                if self._clock() > deadline:
                    for other in self.links.values():
                        other.client.loop_stop()
                    why = link.refused or "no answer"
                    raise SimulatorError(
                        f"cannot connect device {link.device} to the MQTT broker at "
                        f"{self.config.host}:{self.config.port}: {why}"
                    )
        log.info(
            "%d device(s) connected to %s:%d", len(self.links), self.config.host, self.config.port
        )

    def _loop(self, started: float) -> None:
        cfg = self.config
        start = self.source.start_ms
        end = None if cfg.duration_s is None else start + round(cfg.duration_s * 1000)
        while not self._stop.is_set():
            if cfg.speed == 0:
                target = self.virtual_ms + ASAP_STEP_MS
            else:
                target = start + int((self._clock() - started) * 1000 * cfg.speed)
            if end is not None:
                target = min(target, end - 1)  # the run covers [start, end)
            readings = self.source.advance_to(target)
            self.virtual_ms = max(self.virtual_ms, target)
            if self.delivery is not None:
                readings = self.delivery.feed(readings, target)
            self._links_up_or_down()  # first: a device back from silence reconnects, then sends
            self._send(readings)
            self._flush(force=False)
            due = self.source.next_due_ms()
            finished = (end is not None and target >= end - 1) or due is None
            if finished:
                break
            if cfg.speed > 0:
                assert due is not None
                wait_s = (due - start) / 1000 / cfg.speed - (self._clock() - started)
                self._stop.wait(min(max(wait_s, 0.0), MAX_SLEEP_S))
        if self.delivery is not None:
            self._send(self.delivery.flush())
        self._flush(force=True)

    def _send(self, readings: list[DeviceReading]) -> None:
        now = self._clock()
        for r in readings:
            if r.device not in self.links:
                continue
            self._pending[r.device].append(r)
            self._pending_since.setdefault(r.device, now)
            self._last_seq[r.device] = max(self._last_seq.get(r.device, 0), r.seq)
            if len(self._pending[r.device]) >= self.config.batch:
                self._publish(r.device)

    def _flush(self, *, force: bool) -> None:
        now = self._clock()
        for device, since in list(self._pending_since.items()):
            if force or now - since >= self.config.batch_max_delay_s:
                self._publish(device)

    def _publish(self, device: str) -> None:
        batch = self._pending[device]
        self._pending[device] = []
        self._pending_since.pop(device, None)
        for i in range(0, len(batch), self.config.batch):
            if not self.links[device].publish(batch[i : i + self.config.batch], self._stop):
                self._unsent += len(batch) - i  # stopped while the window was full
                return

    def _links_up_or_down(self) -> None:
        for device, link in self.links.items():
            down = self.source.link_down(device)
            if down and not link.down:
                self._publish(device)
                log.info("device %s drops its connection (scenario)", device)
                link.drop_with_will(self._clock)
            elif not down and link.down:
                log.info("device %s reconnects (scenario)", device)
                link.come_back()

    def _close(self) -> None:
        for link in self.links.values():
            link.close(self._clock)

    def _report(self, started: float) -> PublishReport:
        links = self.links.values()
        return PublishReport(
            messages=sum(x.messages for x in links),
            readings=sum(x.readings for x in links),
            acked=sum(x.acked for x in links),
            rejected=sum(x.rejected for x in links),
            unacked=sum(x.unacked for x in links),
            unsent=self._unsent,
            duplicated=self.delivery.duplicated if self.delivery else 0,
            delayed=self.delivery.delayed if self.delivery else 0,
            virtual_s=(self.virtual_ms - self.source.start_ms) / 1000,
            real_s=self._clock() - started,
            last_seq=dict(self._last_seq),
        )


def _default_prefix(topic_root: str) -> str:
    tag = hashlib.blake2b(topic_root.encode(), digest_size=3).hexdigest()
    return f"hazwatch-sim-{tag}"
