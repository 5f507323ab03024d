"""A fast QoS 1 MQTT publisher that knows exactly which messages the broker acknowledged.

paho's publisher tops out at a few thousand QoS 1 messages per second on these machines and
`mosquitto_pub -l -q 1` stops short of its input, so tests and benchmarks publish with this
small MQTT 3.1.1 client on asyncio streams: PUBLISH packets are written in large chunks with a
window of unacknowledged ones, PUBACKs are matched to messages by packet id, and if the
connection drops (a broker restart) it reconnects and sends again what was not acknowledged,
with the DUP flag, as a device with a persistent outbox would.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 0x10, 0x20, 0x30, 0x40, 0xE0


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id: str, *, clean: bool = True, keepalive_s: int = 60) -> bytes:
    flags = 0x02 if clean else 0x00
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive_s) + _utf8(client_id)
    return bytes([CONNECT]) + _remaining_length(len(body)) + body


def publish_packet(
    topic: bytes, payload: bytes, mid: int, *, retain: bool = False, dup: bool = False
) -> bytes:
    """A QoS 1 PUBLISH (a QoS 0 one when mid is 0)."""
    qos_bits = 0x02 if mid else 0x00
    header = PUBLISH | qos_bits | (0x08 if dup and mid else 0) | (0x01 if retain else 0)
    var = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", mid) if mid else b"")
    return bytes([header]) + _remaining_length(len(var) + len(payload)) + var + payload


@dataclass(slots=True)
class PublishReport:
    acked: list[bool]
    connects: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def acked_count(self) -> int:
        return sum(self.acked)


class _Session:
    """One connection: writes publishes, matches PUBACKs to message indexes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        window: int,
        acked: list[bool],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.acked = acked
        self.inflight: dict[int, int] = {}  # packet id -> message index
        self.room = asyncio.Semaphore(window)
        self.next_mid = 0

    def mid(self) -> int:
        while True:
            self.next_mid = self.next_mid % 65535 + 1
            if self.next_mid not in self.inflight:
                return self.next_mid

    async def read_acks(self) -> None:
        while True:
            head = await self.reader.readexactly(2)
            length = head[1]
            body = await self.reader.readexactly(length) if length else b""
            if head[0] & 0xF0 == PUBACK:
                index = self.inflight.pop(struct.unpack(">H", body[:2])[0], None)
                if index is not None:
                    self.acked[index] = True
                    self.room.release()


async def _open(
    host: str, port: int, client_id: str, clean: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(connect_packet(client_id, clean=clean))
        await writer.drain()
        head = await reader.readexactly(4)
    except (OSError, asyncio.IncompleteReadError) as exc:
        writer.close()
        raise ConnectionError(f"no CONNACK: {exc!r}") from exc
    if head[0] != CONNACK or head[3] != 0:
        writer.close()
        raise ConnectionError(f"CONNACK refused: {head!r}")
    return reader, writer


async def publish(
    host: str,
    port: int,
    messages: Sequence[tuple[str, bytes]],
    *,
    client_id: str = "hw-loadgen",
    window: int = 2000,
    chunk: int = 200,
    retain: bool = False,
    reconnect_for_s: float = 60.0,
    rate_per_s: float | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> PublishReport:
    """Publish every message at QoS 1 until each is acknowledged (or the time runs out).

    If the connection drops, reconnect (for up to `reconnect_for_s`) and resend the messages
    that were not acknowledged. `rate_per_s` paces the publishing (None: as fast as possible).
    `on_sent(index)` is called as each message is handed to the socket.
    """
    report = PublishReport(acked=[False] * len(messages))
    topics = {t: t.encode() for t, _ in messages}
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = list(range(len(messages)))
    first = True
    while pending:
        try:
            reader, writer = await _open(host, port, client_id, clean=True)
        except OSError as exc:
            if loop.time() - started > reconnect_for_s:
                report.errors.append(f"gave up reconnecting: {exc}")
                break
            await asyncio.sleep(0.1)
            continue
        report.connects += 1
        session = _Session(reader, writer, window, report.acked)
        acks = asyncio.create_task(session.read_acks())
        try:
            await _send(
                session, messages, topics, pending, chunk, retain, not first, rate_per_s, on_sent
            )
            while session.inflight and not acks.done():
                await asyncio.wait({acks}, timeout=0.05)
            if acks.done() and acks.exception() is not None:
                raise ConnectionError(str(acks.exception()))
            writer.write(bytes([DISCONNECT, 0]))
            with contextlib.suppress(OSError):
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError) as exc:
            report.errors.append(f"connection lost: {exc!r}")
        finally:
            acks.cancel()
            with contextlib.suppress(BaseException):
                await acks
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        first = False
        pending = [i for i in pending if not report.acked[i]]
        if pending and loop.time() - started > reconnect_for_s:
            report.errors.append(f"{len(pending)} message(s) never acknowledged")
            break
    return report


async def _send(
    session: _Session,
    messages: Sequence[tuple[str, bytes]],
    topics: dict[str, bytes],
    pending: list[int],
    chunk: int,
    retain: bool,
    dup: bool,
    rate_per_s: float | None,
    on_sent: Callable[[int], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    buf: list[bytes] = []
    held: list[int] = []  # message indexes in `buf`

    def write() -> None:
        session.writer.write(b"".join(buf))
        buf.clear()
        if on_sent is not None:
            for i in held:
                on_sent(i)
        held.clear()

    for n, index in enumerate(pending):
        await session.room.acquire()
        mid = session.mid()
        session.inflight[mid] = index
        topic, payload = messages[index]
        buf.append(publish_packet(topics[topic], payload, mid, retain=retain, dup=dup))
        held.append(index)
        if len(buf) >= chunk or session.room.locked():
            write()
            await session.writer.drain()
        if rate_per_s is not None:
            ahead_s = (n + 1) / rate_per_s - (loop.time() - t0)
            if ahead_s > 0:
                if buf:
                    write()
                    await session.writer.drain()  # a dead connection shows here, not at the end
                await asyncio.sleep(ahead_s)
    if buf:
        write()
        await session.writer.drain()


def precreate_session(
    host: str, port: int, client_id: str, topics: Sequence[str], *, expiry_s: int = 3600
) -> None:
    """Create a persistent MQTT 5 session subscribed at QoS 1, so messages queue for it.

    Blocking (paho's own thread); call it with asyncio.to_thread from async code.
    """
    import threading  # noqa: PLC0415 - only this helper needs paho and a thread

    import paho.mqtt.client as paho  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415

    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_subscribe = lambda *_args: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    client.connect(host, port, clean_start=False, properties=props)
    client.loop_start()
    try:
        client.subscribe([(t, 1) for t in topics])
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
