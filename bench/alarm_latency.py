"""Alarm latency: from a reading's publish to the alarm event's notification.

A steady stream of readings (default 20,000/s: 2,000 devices x 10 CO channels, one message per
device per second) is published at QoS 1 to a Mosquitto of the benchmark's own (free port,
queue limits lifted), consumed by the real ingest service (`hazwatch ingest`, a subprocess with
a database of the benchmark's own, alarms on), and a LISTEN client on `hazwatch_alarm_events`
receives the events. A scripted fraction of readings (`--crossing`, of device messages) jumps
one channel to 200 ppm (red at once; rate and trend follow) and the next message brings it
back (cleared at once: the bench sensors have no on/off delays), so events flow steadily.

Each reading's `ts` is the time it is scheduled for publishing; the publisher keeps to that
schedule and notes when it hands each crossing message to the socket. An event's `ts` is the
time of the reading that caused it, which names the message: latency is the notification's
arrival minus that message's sending. Events of the first `--warmup-s` seconds are left out.

What the latency is made of: the batcher holds readings up to `HAZWATCH_INGEST__BATCH_MAX_AGE_MS`
(`--batch-age-ms`), then one transaction stores the batch and evaluates it (COPY, engine,
events, NOTIFY); the notification leaves at the commit. `batch_commit_ms_p50/p99` (ingest's
own histogram) is that transaction time.

Last line: {"rate", "p50_ms", "p99_ms", ...}. Target: p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import numpy.typing as npt
import orjson

from bench.broker import Mosquitto, free_port
from bench.mqttload import publish
from hazwatch.config import IngestSettings
from hazwatch.migrate import migrate
from hazwatch.registry.parse import parse_registry
from hazwatch.registry.store import store_registry

TOPIC_ROOT = "hazwatch/v1"
SITE = "bench"
NORMAL_PPM = 5.0
CROSSING_PPM = 200.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def registry_yaml(devices: int, channels: int) -> str:
    """One site, one holder, `devices` detectors of `channels` CO channels each, with no
    on/off delays (every crossing gives its event at once)."""
    rules = "{on_delay_s: 0, off_delay_s: 0}"
    lines = [
        "version: 1",
        "sites:",
        f"  - key: {SITE}",
        "    name: Latency bench",
        "    assets:",
        f"      - {{key: {SITE}-gh, kind: gas_holder, name: Holder}}",
        "    devices:",
    ]
    for d in range(devices):
        lines += [
            f"      - key: {SITE}-d{d}",
            f"        asset: {SITE}-gh",
            "        protocol: mqtt",
            "        sensors:",
        ]
        lines += [
            f"          - {{channel: co{c}, kind: co, rules: {rules}}}" for c in range(channels)
        ]
    return "\n".join(lines) + "\n"


def schedule(
    devices: int, channels: int, msg_rate: float, seconds: float, crossing: float, t0_s: float
) -> tuple[list[tuple[str, bytes]], dict[tuple[str, int], int]]:
    """Messages in publishing order (message n at t0 + n / msg_rate, its `ts`), and the index
    of each message with a crossing reading (up or back down) by (device, ts in ms)."""
    rng = random.Random(7)
    total = int(msg_rate * seconds)
    high: dict[int, int] = {}  # device -> channel held at the crossing value
    messages = []
    crossings = {}
    for n in range(total):
        d = n % devices
        device = f"{SITE}-d{d}"
        ts_ms = round((t0_s + n / msg_rate) * 1000)
        values = dict.fromkeys((f"co{c}" for c in range(channels)), NORMAL_PPM)
        if d in high:
            crossings[device, ts_ms] = n  # back to normal: cleared
            del high[d]
        elif rng.random() < crossing:
            c = rng.randrange(channels)
            values[f"co{c}"] = CROSSING_PPM
            high[d] = c
            crossings[device, ts_ms] = n
        payload = orjson.dumps({"ts": ts_ms, "seq": n // devices, "values": values})
        messages.append((f"{TOPIC_ROOT}/{SITE}/{device}/telemetry", payload))
    return messages, crossings


class Heard:
    """Arrival time (wall clock, s) and payload of every alarm event notification."""

    def __init__(self) -> None:
        self.events: list[tuple[float, bytes]] = []

    def __call__(self, *args: object) -> None:
        self.events.append((time.time(), str(args[3]).encode()))


def event_ts_s(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


async def wait_for_ingest(conn: asyncpg.Connection, port: int, *, timeout_s: float) -> None:
    """Publish a probe reading every half second until ingest has stored one (it has
    subscribed: QoS 1 messages published before it did are not kept for it)."""
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM readings)"):
        if time.monotonic() > deadline:
            raise RuntimeError("ingest stored nothing: see its log")
        probe, _ = schedule(1, 1, 1.0, 1.0, 0.0, time.time())
        await publish("127.0.0.1", port, probe, client_id="hw-latency-probe")
        await asyncio.sleep(0.5)


def start_ingest(
    db_url: str, broker_port: int, batch_age_ms: int, metrics_port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        HAZWATCH_DATABASE__URL=db_url,
        HAZWATCH_MQTT__PORT=str(broker_port),
        HAZWATCH_MQTT__TOPIC_ROOT=TOPIC_ROOT,
        HAZWATCH_MQTT__CLIENT_ID=f"hw-latency-{uuid.uuid4().hex[:8]}",
        HAZWATCH_INGEST__BATCH_MAX_AGE_MS=str(batch_age_ms),
        HAZWATCH_INGEST__METRICS_PORT=str(metrics_port),
    )
    hazwatch = Path(sys.executable).parent / "hazwatch"
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [str(hazwatch), "ingest", "--no-modbus"], env=env, stdout=out, stderr=out
        )


def histogram_quantile(metrics: str, name: str, q: float) -> float | None:
    """A quantile (upper bucket bound) of a Prometheus histogram in text format."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


@dataclass
class Observed:
    """What one run saw, before it is summarised."""

    t0_s: float  # the schedule's start
    crossings: dict[tuple[str, int], int]
    sent_s: npt.NDArray[np.float64]  # per message: when it went to the socket (NaN: never)
    heard: Heard
    began_s: dict[int, float]  # event id -> start of the transaction that wrote it
    published: int
    stored: int
    publisher_end_ms: float
    metrics: str


async def run(args: argparse.Namespace) -> Observed:
    """Database, broker and ingest of the benchmark's own; publish, listen; clean up."""
    name = f"hw_bench_latency_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    broker = Mosquitto(persistence=False)
    ingest: subprocess.Popen[bytes] | None = None
    log_path = Path(broker.dir) / "ingest.log"
    try:
        conn = await asyncpg.connect(db_url)
        try:
            await migrate(conn)
            started = time.monotonic()
            await store_registry(conn, parse_registry(registry_yaml(args.devices, args.channels)))
            log(f"registry: {args.devices * args.channels} sensors in "
                f"{time.monotonic() - started:.1f} s")  # fmt: skip
            broker.start()
            metrics_port = free_port()
            ingest = start_ingest(db_url, broker.port, args.batch_age_ms, metrics_port, log_path)
            return await measure(args, conn, broker.port, metrics_port)
        finally:
            await conn.close()
    except BaseException:
        if log_path.exists():
            log(log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        if ingest is not None:
            stop(ingest)
        broker.cleanup()
        with contextlib.suppress(asyncpg.PostgresError):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def stop(ingest: subprocess.Popen[bytes]) -> None:
    ingest.send_signal(signal.SIGTERM)
    try:
        ingest.wait(30)
    except subprocess.TimeoutExpired:
        ingest.kill()
        ingest.wait()


async def measure(
    args: argparse.Namespace, conn: asyncpg.Connection, broker_port: int, metrics_port: int
) -> Observed:
    """Listen, wait for ingest, publish on schedule, and collect what came back."""
    heard = Heard()
    await conn.add_listener("hazwatch_alarm_events", heard)
    msg_rate = args.rate / args.channels
    await wait_for_ingest(conn, broker_port, timeout_s=120)
    seconds = args.warmup_s + args.seconds
    t0_s = time.time() + 1.0
    messages, crossings = schedule(
        args.devices, args.channels, msg_rate, seconds, args.crossing, t0_s
    )
    sent_s = np.full(len(messages), np.nan)
    await asyncio.sleep(max(0.0, t0_s - time.time()))
    report = await publish(
        "127.0.0.1", broker_port, messages, client_id="hw-latency-pub",
        rate_per_s=msg_rate, window=5000, chunk=1,
        on_sent=lambda i: sent_s.__setitem__(i, time.time()),
    )  # fmt: skip
    publisher_end_ms = (time.time() - (t0_s + seconds)) * 1000
    await asyncio.sleep(args.drain_s)  # the last events
    # recorded_at is now() of the transaction that wrote the event: when it began.
    rows = await conn.fetch(
        "SELECT event_id, extract(epoch FROM recorded_at)::float8 AS began_s FROM alarm_events"
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    return Observed(
        t0_s=t0_s, crossings=crossings, sent_s=sent_s, heard=heard,
        began_s={r["event_id"]: r["began_s"] for r in rows},
        published=report.acked_count * args.channels,
        stored=await conn.fetchval("SELECT count(*) FROM readings"),
        publisher_end_ms=publisher_end_ms, metrics=response.text,
    )  # fmt: skip


def summarise(args: argparse.Namespace, seen: Observed) -> dict[str, object]:
    measured_from = seen.t0_s + args.warmup_s
    latency, to_tx, in_tx, behind = [], [], [], []
    for arrived_s, payload in seen.heard.events:
        event = orjson.loads(payload)
        ts_s = event_ts_s(event)
        cause = seen.crossings.get((str(event["sensor"]).split("/")[0], round(ts_s * 1000)))
        if ts_s < measured_from or cause is None or np.isnan(seen.sent_s[cause]):
            continue
        published_s = float(seen.sent_s[cause])
        latency.append((arrived_s - published_s) * 1000)
        behind.append((published_s - ts_s) * 1000)
        began_s = seen.began_s.get(int(str(event["event_id"])))
        if began_s is not None:
            to_tx.append((began_s - published_s) * 1000)
            in_tx.append((arrived_s - began_s) * 1000)
    commit = [
        histogram_quantile(seen.metrics, "hazwatch_ingest_batch_latency_seconds", q)
        for q in (0.5, 0.99)
    ]
    return {
        "rate": args.rate,
        "p50_ms": _percentile(latency, 50),
        "p99_ms": _percentile(latency, 99),
        "max_ms": _percentile(latency, 100),
        "events": len(latency),
        "events_per_s": round(len(latency) / args.seconds, 1),
        "crossing_readings": len(seen.crossings),
        "readings_published": seen.published,
        "readings_stored": seen.stored,
        # how far behind its schedule the publisher sent (latency counts from the sending)
        "publisher_behind_ms_p99": _percentile(behind, 99),
        "publisher_end_ms": round(seen.publisher_end_ms, 1),
        # publish -> the start of the transaction that wrote the event (broker, ingest's
        # queue, the batch's age), and from there to the notification (the transaction)
        "to_tx_ms_p50": _percentile(to_tx, 50),
        "to_tx_ms_p99": _percentile(to_tx, 99),
        "tx_to_notify_ms_p50": _percentile(in_tx, 50),
        "tx_to_notify_ms_p99": _percentile(in_tx, 99),
        "batch_max_age_ms": args.batch_age_ms,
        "batch_commit_ms_p50": None if commit[0] is None else commit[0] * 1000,
        "batch_commit_ms_p99": None if commit[1] is None else commit[1] * 1000,
        "seconds": args.seconds,
        "sensors": args.devices * args.channels,
        "target_p99_ms": 100,
    }


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20_000, help="readings per second")
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--channels", type=int, default=10, help="CO channels per message")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=3.0)
    parser.add_argument("--crossing", type=float, default=0.02,
                        help="share of device messages that start a crossing")  # fmt: skip
    parser.add_argument(
        "--batch-age-ms",
        type=int,
        default=IngestSettings().batch_max_age_ms,
        help="HAZWATCH_INGEST__BATCH_MAX_AGE_MS of the ingest under test",
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(json.dumps(summarise(args, asyncio.run(run(args)))))


if __name__ == "__main__":
    main()
