"""The MQTT collector: paho-mqtt driven by the asyncio loop, acknowledging after the commit.

One `MqttCollector` owns one broker connection with a fixed client id and a persistent session
(MQTT 5: clean_start=False, a session expiry and a large Receive Maximum; MQTT 3.1.1:
clean_session=False). It subscribes at QoS 1 to `<root>/<site>/+/telemetry` and `.../status` for
the sites of its partition (all sites when none are set).

The paho client runs no thread: its socket is watched by the event loop (`add_reader` /
`add_writer`, as aiomqtt does). When the socket is readable, a burst of packets is read; each
message is decoded straight into column buffers (`ingest.decode`) as paho hands it over. At the
end of the burst the readings become one `ReadingBatch` for the batcher, refused payloads
become quarantine records and status messages status updates, and the burst's message ids
form one acknowledgement group: its PUBACKs are sent, as one write (`ingest.mqttacks`), once
every part of it is committed. If the batcher or a writer is full, the collector stops
reading the socket until there is room: TCP pushes back on the broker, which keeps the
messages (nothing is dropped here).

Acknowledgements belong to a connection: after a reconnect the broker redelivers everything
that was not acknowledged, reusing packet ids, so acks from an earlier connection are never
sent (the store drops the redelivered copies as duplicates).

With MQTT 3.1.1 there is no Receive Maximum: the broker's `max_inflight_messages` caps the
unacknowledged messages, and acknowledging after a commit then caps the rate at that many
messages per commit; set it to 0 (unlimited) in mosquitto.conf (deploy/mosquitto/).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import ssl
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hazwatch.config import MqttSettings
from ingest.batcher import Batcher, BatcherClosed
from ingest.dbsession import Backoff
from ingest.decode import (
    ColumnBuilder,
    DecodeLimits,
    Reason,
    SensorIndex,
    Topic,
    decode_status,
    decode_telemetry,
    parse_topic,
)
from ingest.metrics import IngestMetrics
from ingest.mqttacks import send_pubacks
from ingest.quarantine import QuarantineRecord, QuarantineSink
from ingest.seqgaps import Gap, SeqGapTracker
from ingest.status import DeviceStatus, StatusWriter
from ingest.writer import WriterClosed

log = logging.getLogger(__name__)

SOURCE = "mqtt"
BURST_PACKETS = 256  # packets read per readable event before other tasks get a turn
MISC_INTERVAL_S = 1.0  # paho's keepalive bookkeeping
TOPIC_CACHE_MAX = 100_000
SEQ_GAP_RANGES_PER_RECORD = 20  # a seq_gap quarantine record lists at most this many ranges


class ConnectRefused(Exception):
    """The broker answered CONNECT with a failure reason code (bad credentials, ...)."""


def subscriptions(settings: MqttSettings) -> list[str]:
    sites = settings.sites or ("+",)
    return [
        f"{settings.topic_root}/{site}/+/{kind}"
        for site in sites
        for kind in ("telemetry", "status")
    ]


class _AckGroup:
    """The message ids of one burst; acknowledged when every part of the burst is committed."""

    __slots__ = ("_ack", "_generation", "_mids", "_pending")

    def __init__(
        self, generation: int, mids: array[int], ack: Callable[[int, array[int]], None]
    ) -> None:
        self._generation = generation
        self._mids = mids
        self._ack = ack
        self._pending = 0

    def hold(self) -> Callable[[], None]:
        """One more part to wait for; returns the callback that releases it."""
        self._pending += 1
        return self._release

    def _release(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._ack(self._generation, self._mids)


@dataclass(slots=True)
class _Burst:
    """What one burst of messages produced, before it is handed on."""

    mids: array[int]
    quarantine: list[QuarantineRecord]
    statuses: list[DeviceStatus]
    messages: int = 0


class MqttCollector:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        index: SensorIndex,
        limits: DecodeLimits,
        batcher: Batcher,
        quarantine: QuarantineSink,
        status: StatusWriter,
        metrics: IngestMetrics,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._index = index
        self._limits = limits
        self._batcher = batcher
        self._quarantine = quarantine
        self._status = status
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._received = metrics.messages_received.labels(SOURCE)
        self._readings = metrics.readings_received.labels(SOURCE)

        self._client = self._make_client()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        # One per connection, bumped when a session starts and when a connection is lost: acks
        # of another connection are never sent (not even on the next one before its CONNACK).
        self._generation = 0
        self._session_up = False  # CONNACK accepted and the socket still ours
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._written = asyncio.Event()  # set when paho has nothing left to send
        self.subscribed = asyncio.Event()  # the broker granted our subscriptions
        self._reading = False
        self._handoff: asyncio.Task[None] | None = None
        self._had_session = False
        self._topics: dict[str, Topic | None] = {}
        self._builder = ColumnBuilder()
        # The batcher flushes whole pieces: one burst is at most an eighth of a flush.
        self._burst_max_rows = max(1, batcher.max_rows // 8)
        self._burst = self._new_burst()
        self._now_us = 0
        self._now_mono_s = 0.0  # monotonic time of the burst, for the gap tracker
        self._redelivered = False  # DUP flag of the message being handled
        self.acks_sent = 0
        self.acks_dropped = 0  # acks of a connection that is gone: the broker redelivers
        self._gaps = SeqGapTracker(grace_s=settings.seq_gap_grace_s)

    # --- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session_up and self._sock is not None and not self._lost.is_set()

    def update_index(self, index: SensorIndex) -> None:
        """Use a new registry view from the next message on."""
        self._index = index

    async def run(self) -> None:
        """Connect, read until `stop_input()`, reconnecting with jittered backoff."""
        self._loop = asyncio.get_running_loop()
        misc = asyncio.create_task(self._misc_loop(), name="mqtt-misc")
        attempt = 0
        try:
            while not self._stopping.is_set():
                try:
                    await self._connect()
                except (OSError, ConnectRefused, TimeoutError) as exc:
                    self._abandon_socket()
                    delay = self._backoff.delay_s(attempt, self._rng)
                    log_fn = log.warning if attempt == 0 else log.debug
                    log_fn(
                        "mqtt %s: cannot connect to %s:%d (%s); retrying in %.1f s",
                        self._settings.client_id,
                        self._settings.host,
                        self._settings.port,
                        str(exc),  # not the exception: a log record would keep its socket alive
                        delay,
                    )
                    attempt += 1
                    await self._sleep_unless_stopping(delay)
                    continue
                attempt = 0
                await self._wait_lost_or_stopping()
                if self._lost.is_set() and not self._stopping.is_set():
                    self._metrics.mqtt_disconnects.labels(self._settings.client_id).inc()
                    log.warning("mqtt %s: connection lost; reconnecting", self._settings.client_id)
                    await self._sleep_unless_stopping(self._backoff.delay_s(0, self._rng))
        finally:
            misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await misc

    def stop_input(self) -> None:
        """Stop reading new messages; acknowledgements of committed ones still go out."""
        self._stopping.set()
        self._pause_reading()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Send the acknowledgements still queued, then disconnect cleanly."""
        self.stop_input()
        if self._handoff is not None:
            self._handoff.cancel()
        if self.connected:
            if self._client.want_write():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await self._written.wait()
            self._client.disconnect()
            self._client.loop_write()  # sends DISCONNECT; paho then closes the socket
        self._abandon_socket()

    # --- connection -----------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self._settings
        v5 = s.protocol == 5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        paho_log = logging.getLogger("paho.mqtt")
        if paho_log.isEnabledFor(logging.DEBUG):
            # paho formats a line for every packet it logs: only worth it when debugging.
            client.enable_logger(paho_log)
        if s.username is not None:
            client.username_pw_set(
                s.username, s.password.get_secret_value() if s.password else None
            )
        if s.tls_ca_file is not None:
            client.tls_set(ca_certs=s.tls_ca_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        s = self._settings
        client = self._client
        # Socket callbacks off while paho connects in a worker thread: it writes CONNECT itself.
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        self._lost.clear()
        self._connack = loop.create_future()
        if s.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
            connect = functools.partial(
                client.connect, s.host, s.port, s.keepalive_s, clean_start=False, properties=props
            )
        else:
            connect = functools.partial(client.connect, s.host, s.port, s.keepalive_s)
        await loop.run_in_executor(None, connect)
        sock = client.socket()
        if not isinstance(sock, socket.socket):
            raise OSError("paho returned no socket after connect")
        self._sock = sock
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        if client.want_write():
            loop.add_writer(sock, self._on_writable)
        self._resume_reading()
        code = await self._await_connack(self._connack, timeout_s=max(s.keepalive_s, 10))
        if code.is_failure:
            raise ConnectRefused(str(code))

    async def _await_connack(
        self, connack: asyncio.Future[ReasonCode], *, timeout_s: float
    ) -> ReasonCode:
        """The broker's CONNACK; OSError at once if the connection closes first or ingest is
        stopping, TimeoutError if the broker says nothing."""
        await self._wait_lost_or_stopping(connack, timeout_s=timeout_s)
        if connack.done():
            return connack.result()
        if self._lost.is_set():
            raise OSError("the connection closed before the broker's CONNACK")
        if self._stopping.is_set():
            raise OSError("stopping")
        raise TimeoutError(f"no CONNACK within {timeout_s:g} s")

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason_code)
        if reason_code.is_failure:
            return
        self._generation += 1
        self._session_up = True
        self._metrics.mqtt_connections.labels(self._settings.client_id).inc()
        if self._had_session and not flags.session_present:
            log.warning(
                "mqtt %s: the broker did not keep our session: messages published while we were"
                " away may be lost (is broker persistence on?)",
                self._settings.client_id,
            )
        self._had_session = True
        log.info(
            "mqtt %s: connected to %s:%d (session present: %s)",
            self._settings.client_id,
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        topics = subscriptions(self._settings)
        if self._settings.protocol == 5:
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        else:
            client.subscribe([(t, 1) for t in topics])

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("mqtt %s: subscription refused: %s", self._settings.client_id, refused)
        else:
            self.subscribed.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._lost.set()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._close_socket()

    def _close_socket(self) -> None:
        self._lost.set()
        if self._session_up:
            self._generation += 1  # what this connection received is acknowledged on no other
        self._session_up = False
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
        self._sock = None
        self._reading = False

    def _abandon_socket(self) -> None:
        """Stop watching the socket and close it (paho may still hold the closed object)."""
        sock = self._sock
        self._close_socket()
        if sock is not None:
            sock.close()

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._written.clear()
        if self._loop is not None and self._sock is not None:
            self._loop.add_writer(self._sock, self._on_writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._written.set()
        if self._loop is not None and self._sock is not None:
            self._loop.remove_writer(self._sock)

    def _on_writable(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._sock is not None:
                self._client.loop_misc()
            for gap in self._gaps.due(time.monotonic()):
                self._report_gap(gap, None)

    def _report_gap(self, gap: Gap, topic: str | None) -> None:
        """A device's messages that never arrived: counted, logged once, and recorded in
        quarantine (reason seq_gap, every missing number, 20 ranges per record), where an
        operator looks for data that did not make it."""
        self._metrics.seq_gap_messages.inc(gap.missing)
        log.warning(
            "device %s: %d message(s) never arrived (%d gap(s), seq %d..%d)",
            gap.device, gap.missing, len(gap.ranges), gap.first_seq, gap.last_seq,
        )  # fmt: skip
        ranges = gap.ranges
        for start in range(0, len(ranges), SEQ_GAP_RANGES_PER_RECORD):
            part = ranges[start : start + SEQ_GAP_RANGES_PER_RECORD]
            missing = sum(b - a + 1 for a, b in part)
            detail = f"device {gap.device}: {missing} message(s) never arrived, seq " + ", ".join(
                f"{a}..{b}" for a, b in part
            )
            record = self._quarantine.record(SOURCE, topic, Reason.SEQ_GAP, detail, None)
            if not self._quarantine.offer(record):
                self._metrics.quarantine_dropped.inc()

    async def _wait_lost_or_stopping(
        self, *also: asyncio.Future[Any], timeout_s: float | None = None
    ) -> None:
        """Until the connection is lost, ingest is stopping, one of `also` is done, or the
        timeout passes."""
        lost = asyncio.ensure_future(self._lost.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                (lost, stopping, *also), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            stopping.cancel()

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    # --- reading --------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if self._loop is None or self._sock is None or self._reading or self._stopping.is_set():
            return
        self._reading = True
        self._loop.add_reader(self._sock, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading and self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock)
        self._reading = False

    def _on_readable(self) -> None:
        client = self._client
        self._now_us = int(self._wall_clock() * 1_000_000)
        self._now_mono_s = time.monotonic()
        burst = self._burst
        builder = self._builder
        max_rows = self._burst_max_rows
        for _ in range(BURST_PACKETS):
            before = burst.messages
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or burst.messages == before:
                break  # nothing more buffered (or the connection closed: on_disconnect saw it)
            if len(builder) >= max_rows:
                break  # small pieces pack into full flushes
        self._hand_on()
        sock = self._sock
        if self._reading and isinstance(sock, ssl.SSLSocket) and sock.pending():
            # TLS may hold decrypted bytes the event loop cannot see on the file descriptor.
            asyncio.get_running_loop().call_soon(self._on_readable)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        burst = self._burst
        burst.messages += 1
        if message.qos:
            burst.mids.append(message.mid)
        try:
            topic_text: str | None = message.topic
        except UnicodeDecodeError:
            topic_text = None
        topic = None if topic_text is None else self._topic(topic_text)
        payload = message.payload
        self._redelivered = bool(message.dup)
        if topic is None:
            self._refuse(topic_text, Reason.BAD_TOPIC, "not <root>/<site>/<device>/<kind>", payload)
        elif topic.kind == "telemetry":
            seqs_before = len(self._builder.object_seq)
            try:
                rejections = decode_telemetry(
                    payload,
                    site=topic.site,
                    device=topic.device,
                    index=self._index,
                    limits=self._limits,
                    now_us=self._now_us,
                    out=self._builder,
                )
            except Exception as exc:  # untrusted input: a decoder bug must not stop ingest
                log.exception("decoder failed on a message from %s", topic_text)
                self._refuse(topic_text, Reason.DECODE_ERROR, repr(exc), payload)
                return
            for r in rejections:
                self._metrics.readings_rejected.labels(SOURCE, r.reason).inc(r.readings)
                self._refuse(topic_text, r.reason, r.detail, payload)
            now_s = self._now_mono_s
            for seq in self._builder.object_seq[seqs_before:]:
                for gap in self._gaps.observe(topic.device, seq, now_s):
                    self._report_gap(gap, topic_text)
        elif topic.kind == "status":
            self._device_status(topic_text, topic, payload)
        else:
            self._refuse(topic_text, Reason.BAD_TOPIC, f"unknown kind {topic.kind!r}", payload)

    def _topic(self, text: str) -> Topic | None:
        try:
            return self._topics[text]
        except KeyError:
            pass
        if len(self._topics) >= TOPIC_CACHE_MAX:
            self._topics.clear()
        topic = self._topics[text] = parse_topic(text, self._settings.topic_root)
        return topic

    def _device_status(
        self, topic_text: str | None, topic: Topic, payload: bytes | bytearray
    ) -> None:
        status = decode_status(payload)
        if status is None:
            self._refuse(topic_text, Reason.BAD_STATUS, "status must be online or offline", payload)
            return
        device = self._index.devices.get(topic.device)
        if device is None:
            self._refuse(
                topic_text,
                Reason.UNKNOWN_DEVICE,
                f"device {topic.device!r} is not registered",
                payload,
            )
        elif device.site_key != topic.site:
            self._refuse(
                topic_text,
                Reason.WRONG_SITE,
                f"device {topic.device!r} belongs to site {device.site_key!r}",
                payload,
            )
        else:
            at = datetime.fromtimestamp(self._now_us / 1_000_000, UTC)
            self._burst.statuses.append(DeviceStatus(topic.device, status, at))

    def _refuse(
        self, topic: str | None, reason: str, detail: str, payload: bytes | bytearray
    ) -> None:
        self._burst.quarantine.append(
            self._quarantine.record(
                SOURCE, topic, reason, detail, payload, redelivered=self._redelivered
            )
        )

    @staticmethod
    def _new_burst() -> _Burst:
        return _Burst(mids=array("H"), quarantine=[], statuses=[])

    def _hand_on(self) -> None:
        """Pass the burst's readings and records on; pause reading if any of them must wait."""
        burst = self._burst
        if burst.messages == 0:
            return
        self._burst = self._new_burst()
        self._received.inc(burst.messages)
        group = _AckGroup(self._generation, burst.mids, self._ack)
        waiting: list[Callable[[], Awaitable[None]]] = []
        if len(self._builder):
            batch = self._builder.take()
            self._readings.inc(len(batch))
            done = group.hold()
            if not self._batcher.offer(batch, done):
                waiting.append(functools.partial(self._batcher.put, batch, done))
        for record in burst.quarantine:
            done = group.hold()
            if not self._quarantine.offer(record, done):
                waiting.append(functools.partial(self._quarantine.put_record, record, done))
        for update in burst.statuses:
            done = group.hold()
            if not self._status.offer(update, done):
                waiting.append(functools.partial(self._status.put, update, done))
        if waiting:
            self._pause_reading()
            self._handoff = asyncio.create_task(self._wait_for_room(waiting))

    async def _wait_for_room(self, waiting: list[Callable[[], Awaitable[None]]]) -> None:
        try:
            for put in waiting:
                await put()
        except (BatcherClosed, WriterClosed):
            return  # shutting down: these messages stay unacknowledged, the broker keeps them
        self._handoff = None
        self._resume_reading()

    def _ack(self, generation: int, mids: array[int]) -> None:
        if generation != self._generation or not self.connected:
            self.acks_dropped += len(mids)
            self._metrics.mqtt_acks_dropped.labels(self._settings.client_id).inc(len(mids))
            return
        send_pubacks(self._client, mids)
        self.acks_sent += len(mids)
