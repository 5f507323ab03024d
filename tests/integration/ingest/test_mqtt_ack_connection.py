"""Acknowledgements belong to the connection that received the messages.

A batch received on one connection may commit after that connection dropped and a new one is
being set up. Its PUBACKs must not go out on the new connection: packet ids are per session
and a broker may have given the same id to another message by then.

A fake broker stands in for Mosquitto here, and only here: the test needs a broker that holds
its CONNACK back while the collector's previous batch commits, which Mosquitto cannot be made
to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from bench.broker import free_port
from hazwatch.config import MqttSettings
from ingest.batcher import Batcher
from ingest.decode import DecodeLimits, SensorIndex
from ingest.metrics import IngestMetrics
from ingest.mqtt import MqttCollector
from ingest.quarantine import QuarantineRecord, new_record

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, SUBSCRIBE, SUBACK = 0x10, 0x20, 0x32, 0x40, 0x82, 0x90


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readexactly(1))[0]
    length, mult = 0, 1
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            return head, await reader.readexactly(length)


class HeldQuarantine:
    """Takes the collector's quarantine records and keeps their commit callbacks to call later."""

    def __init__(self) -> None:
        self.commits: list[Callable[[], None]] = []
        self.held = asyncio.Event()

    def record(self, *args: Any, **kwargs: Any) -> QuarantineRecord:
        return new_record(*args, now_s=time.time(), **kwargs)

    def offer(self, record: QuarantineRecord, on_commit: Callable[[], None] | None = None) -> bool:
        if on_commit is not None:
            self.commits.append(on_commit)
            self.held.set()
        return True


async def test_a_batch_committed_during_a_reconnect_is_not_acknowledged_on_the_new_connection() -> (
    None
):
    port = free_port()
    connections: list[asyncio.StreamWriter] = []
    second_connection_got: list[tuple[int, bytes]] = []
    drop_first = asyncio.Event()
    second_connected = asyncio.Event()
    send_second_connack = asyncio.Event()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connections.append(writer)
            command, _ = await read_packet(reader)
            assert command == CONNECT
            if len(connections) == 1:
                writer.write(bytes([CONNACK, 2, 0, 0]))
                _, body = await read_packet(reader)  # SUBSCRIBE: grant it
                writer.write(bytes([SUBACK, 4]) + body[:2] + b"\x01\x01")
                topic = b"not/a/hazwatch/topic"  # refused to quarantine: an ack group of one
                var = struct.pack(">H", len(topic)) + topic + struct.pack(">H", 7)
                writer.write(bytes([PUBLISH_QOS1, len(var) + 3]) + var + b"abc")
                await drop_first.wait()
                writer.transport.abort()
                return
            second_connected.set()
            await send_second_connack.wait()
            second_connection_got.append((-1, b"CONNACK sent"))
            writer.write(bytes([CONNACK, 2, 1, 0]))
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    second_connection_got.append(await read_packet(reader))
        finally:
            writer.close()  # every connection this broker accepted

    server = await asyncio.start_server(broker, "127.0.0.1", port)
    quarantine = HeldQuarantine()
    metrics = IngestMetrics.create(CollectorRegistry())
    collector = MqttCollector(
        MqttSettings(
            port=port, protocol=4, client_id="ack-test", topic_root="r",
            reconnect_min_s=0.05, reconnect_max_s=0.05, keepalive_s=10,
        ),
        index=SensorIndex(devices={}),
        limits=DecodeLimits(10**6, 10**12, 10**15),
        batcher=Batcher(max_rows=100, max_age_ms=10, capacity_rows=1000),
        quarantine=quarantine,  # type: ignore[arg-type]
        status=None,  # type: ignore[arg-type]
        metrics=metrics,
    )  # fmt: skip
    task = asyncio.create_task(collector.run())
    try:
        async with asyncio.timeout(10):
            await quarantine.held.wait()  # message 7 of the first connection is held
            drop_first.set()
            await second_connected.wait()  # the second connection is up, its CONNACK held back
            await asyncio.sleep(0.2)
        assert not collector.connected  # no session before the CONNACK
        for commit in quarantine.commits:
            commit()  # the first connection's batch commits now
        assert (collector.acks_sent, collector.acks_dropped) == (0, 1)
        send_second_connack.set()
        await asyncio.sleep(0.5)
        assert collector.connected
        assert second_connection_got[0] == (-1, b"CONNACK sent")
        assert all(command != PUBACK for command, _ in second_connection_got[1:])
    finally:
        collector.stop_input()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await collector.aclose()
        server.close()
        for writer in connections:
            writer.close()
