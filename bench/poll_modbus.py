"""Modbus polling benchmark: 200 simulated devices at 1 Hz for 30 s, one of them dead.

    python -m bench.poll_modbus [--seconds 30] [--timeout-s 0.3]

Layout: 8 gateways with 20 units each (Midas-like CO detectors and YA-K300-like LEL detectors,
alternating gateways) and 40 pipeline RTUs on ports of their own: 48 TCP connections. Unit 7 on
the first gateway never answers. The servers run in a separate process (`hazwatch simulate
modbus`, the plant models in their quiet scenario), so client and servers do not share an event
loop; on this 2-core machine they still share the CPU.

Measured over the window after a warm-up (the dead unit is dead from the start, so the window
holds its breaker's probes, each of which costs its gateway one request timeout):

- polls_per_s: scheduled polls executed per second (every device, every outcome);
- jitter_p99_ms: p99 of (poll start - scheduled start) over the healthy devices;
- missed_polls: healthy devices' scheduled polls in the window that did not happen or failed;
- dead_device_effect_ms: p99 jitter of the dead unit's gateway neighbours minus the p99 of the
  units on the other gateways.

The machine's own limit, measured first in the same run: back-to-back reads on one connection
to the same server process (`limit_requests_per_s`); `load_ratio` is the benchmark's request
rate over it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import yaml
from pymodbus.client import AsyncModbusTcpClient

from hazwatch.config import ModbusSettings
from hazwatch.domain import ReadingBatch
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import load_registry
from ingest.modbus import ModbusCollector, Outcome, PollRecord

GATEWAYS = 8
UNITS_PER_GATEWAY = 20
RTUS = 40
DEAD_GATEWAY, DEAD_UNIT = 0, 7
HOST = "127.0.0.1"


def midas(key: str, port: int, unit: int, timeout_s: float) -> dict[str, object]:
    return {
        "key": key, "asset": "a", "protocol": "modbus",
        "modbus": {"host": HOST, "port": port, "unit": unit, "addressing": "base1",
                   "word_order": "CDAB", "timeout_s": timeout_s, "poll_groups": {"default": 1.0},
                   "status": [{"address": 40001, "fault_mask": 0x30, "applies_to": ["co"]}]},
        "sensors": [
            {"channel": "co", "kind": "co", "modbus": {"address": 40003, "type": "float32"}},
            {"channel": "low_alarm", "kind": "detector_alarm",
             "modbus": {"address": 40001, "type": "bits", "mask": 0x40}},
            {"channel": "high_alarm", "kind": "detector_alarm",
             "modbus": {"address": 40001, "type": "bits", "mask": 0x80}},
            {"channel": "fault", "kind": "fault_code", "modbus": {"address": 40006}},
        ],
    }  # fmt: skip


def yak(key: str, port: int, unit: int, timeout_s: float) -> dict[str, object]:
    return {
        "key": key, "asset": "a", "protocol": "modbus",
        "modbus": {"host": HOST, "port": port, "unit": unit, "timeout_s": timeout_s,
                   "poll_groups": {"default": 1.0},
                   "status": [{"address": 1, "fault_values": [2]}]},
        "sensors": [
            {"channel": "lel", "kind": "combustible_gas", "modbus": {"address": 0, "scale": 0.1}},
            {"channel": "alarm", "kind": "detector_alarm", "range": [0, 2],
             "modbus": {"address": 2}},
        ],
    }  # fmt: skip


def rtu(key: str, port: int, timeout_s: float) -> dict[str, object]:
    return {
        "key": key, "asset": "a", "protocol": "modbus",
        "modbus": {"host": HOST, "port": port, "unit": 1, "timeout_s": timeout_s,
                   "poll_groups": {"default": 1.0}},
        "sensors": [
            {"channel": "pressure", "kind": "pipeline_pressure_kpa", "params": {"design_kpa": 10.0},
             "range": [0, 30], "modbus": {"address": 0, "type": "int16", "decimals_address": 10}},
            {"channel": "flow", "kind": "flow", "range": [0, 200000],
             "modbus": {"address": 2, "type": "uint32", "scale": 0.1}},
        ],
    }  # fmt: skip


def registry(ports: list[int], timeout_s: float) -> tuple[dict[str, object], str]:
    devices: list[dict[str, object]] = []
    for g in range(GATEWAYS):
        make = midas if g % 2 == 0 else yak
        devices += [
            make(f"gw{g}-u{u}", ports[g], u, timeout_s) for u in range(1, UNITS_PER_GATEWAY + 1)
        ]
    devices += [rtu(f"rtu{i}", ports[GATEWAYS + i], timeout_s) for i in range(RTUS)]
    doc = {
        "version": 1,
        "sites": [{
            "key": "bench", "name": "Benchmark site",
            "assets": [{"key": "a", "kind": "other", "name": "Benchmark asset"}],
            "devices": devices,
        }],
    }  # fmt: skip
    return doc, f"gw{DEAD_GATEWAY}-u{DEAD_UNIT}"


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def simulator(registry_file: Path, dead: str) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable, "-c", "from hazwatch.cli import main; main()",
        "simulate", "modbus", "--registry", str(registry_file), "--fault", f"{dead}=dead",
    ]  # fmt: skip
    env = {**os.environ, "HAZWATCH_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_listening(ports: list[int], proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        for port in ports:
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"simulator exited: {err[-2000:]}")
                try:
                    _, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                break


async def request_limit(port: int, seconds: float) -> float:
    """Back-to-back reads on one connection: what one line can do on this machine now."""
    client = AsyncModbusTcpClient(HOST, port=port, retries=0, reconnect_delay=0)
    await client.connect()
    n = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            await client.read_holding_registers(0, count=3, device_id=1)
            n += 1
    finally:
        client.close()
    return n / seconds


class CountingSink:
    def __init__(self) -> None:
        self.rows = 0

    async def put(self, batch: ReadingBatch, on_commit: Callable[[], None] | None = None) -> None:
        self.rows += len(batch)


class CountingQuarantine:
    def __init__(self) -> None:
        self.items = 0

    async def put(self, source: str, topic: str, reason: str, detail: str, payload: bytes) -> None:
        self.items += 1


def p99_ms(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99) * 1000) if values else 0.0


async def bench(seconds: float, warmup_s: float, timeout_s: float) -> dict[str, object]:
    ports = free_ports(GATEWAYS + RTUS)
    doc, dead = registry(ports, timeout_s)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        snap = snapshot_from_file(load_registry(path))
        with simulator(path, dead) as proc:
            await wait_listening(ports, proc, 30)
            limit = await request_limit(ports[1], 2.0)  # a healthy gateway
            records: list[PollRecord] = []
            sink, quarantine = CountingSink(), CountingQuarantine()
            collector = ModbusCollector(
                snap, sink, quarantine=quarantine, settings=ModbusSettings(),
                on_poll=records.append,
            )  # fmt: skip
            async with collector:
                task = asyncio.create_task(collector.run())
                t0 = time.monotonic()
                w0, w1 = t0 + warmup_s, t0 + warmup_s + seconds
                await asyncio.sleep(warmup_s)
                cpu0, sim0 = time.process_time(), cpu_seconds(proc.pid)
                await asyncio.sleep(w1 - time.monotonic() + 1.5)  # let the window's polls end
                cpu, sim = time.process_time() - cpu0, cpu_seconds(proc.pid) - sim0
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    window = [r for r in records if w0 <= r.scheduled < w1]
    healthy = [r for r in window if r.device != dead]
    dead_line = next(r.line for r in records if r.device == dead)
    neighbours = [r.started - r.scheduled for r in healthy if r.line == dead_line]
    other_gateways = [
        r.started - r.scheduled for r in healthy
        if r.line != dead_line and r.device.startswith("gw")
    ]  # fmt: skip
    devices = {r.device for r in records}
    ok_by_device: dict[str, int] = dict.fromkeys(devices - {dead}, 0)
    for r in healthy:
        if r.outcome is Outcome.OK:
            ok_by_device[r.device] += 1
    slots = round(seconds)  # 1 Hz: each device has one slot per second of the window
    missed = sum(max(0, slots - n) for n in ok_by_device.values())
    requests = sum(1 for r in window if r.outcome not in (Outcome.SKIPPED,))
    stats = collector.stats()
    return {
        "devices": len(devices),
        "polls_per_s": round(len(window) / seconds, 1),
        "jitter_p99_ms": round(p99_ms([r.started - r.scheduled for r in healthy]), 2),
        "missed_polls": missed,
        "dead_device_effect_ms": round(p99_ms(neighbours) - p99_ms(other_gateways), 2),
        "jitter_max_ms": round(max(r.started - r.scheduled for r in healthy) * 1000, 2),
        "neighbours_p99_ms": round(p99_ms(neighbours), 2),
        "other_gateways_p99_ms": round(p99_ms(other_gateways), 2),
        "dead_polls": dict(stats[dead].polls_failed),
        "healthy_failed": sum(sum(s.polls_failed.values()) for k, s in stats.items() if k != dead),
        "rows_per_s": round(sink.rows / (time.monotonic() - t0), 1),
        "collector_cpu_pct": round(100 * cpu / (seconds + 1.5), 1),
        "simulator_cpu_pct": round(100 * sim / (seconds + 1.5), 1),
        "limit_requests_per_s": round(limit, 1),
        "load_ratio": round(requests / seconds / limit, 3),
        "device_timeout_s": timeout_s,
        "lines": len(collector.lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--timeout-s", type=float, default=0.3, help="per-request timeout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(bench(args.seconds, args.warmup_s, args.timeout_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
