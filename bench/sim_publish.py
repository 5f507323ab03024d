"""How fast the simulators go: generating the demo city's stream, and publishing it over MQTT
compared with a bare paho client publishing the same payloads on the same broker (the limit).

    python -m bench.sim_publish [--seconds 600] [--host 127.0.0.1] [--port 1883]

The last line is one JSON object: generation in readings (values) and messages per second,
publishing in messages per second for both, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hazwatch.registry.parse import load_registry
from simulators.mqtt_publisher import MqttPublisher, PublisherConfig
from simulators.payload import encode
from simulators.plant import Plant
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

ROOT = Path(__file__).resolve().parents[1]
START = 1_795_852_800_000
INFLIGHT = 100


def generate(plant: Plant, seconds: int) -> dict[str, float]:
    sim = Simulation(plant, seed=1, start_ms=START, scenario=load_scenario("demo"))
    t0 = time.perf_counter()
    messages = values = 0
    for r in sim.run(seconds * 1000):
        messages += 1
        values += len(r.values)
    elapsed = time.perf_counter() - t0
    return {
        "gen_messages_per_s": messages / elapsed,
        "gen_values_per_s": values / elapsed,
        "gen_virtual_s_per_s": seconds / elapsed,
    }


def publish_ours(plant: Plant, seconds: int, host: str, port: int) -> tuple[float, int]:
    devices = [d for d, info in plant.devices.items() if info.protocol == "mqtt"]
    sim = Simulation(plant, seed=1, start_ms=START, devices=devices)
    config = PublisherConfig(
        host=host, port=port, topic_root=f"bench-{uuid.uuid4().hex[:8]}/v1", speed=0,
        duration_s=seconds, max_inflight=INFLIGHT,
    )  # fmt: skip
    report = MqttPublisher(sim, config).run()
    assert report.lost == 0, report
    return report.messages / report.real_s, report.messages


def publish_bare(plant: Plant, seconds: int, host: str, port: int) -> float:
    """One paho client per device, QoS 1, the same window, payloads encoded beforehand."""
    devices = [d for d, info in plant.devices.items() if info.protocol == "mqtt"]
    sim = Simulation(plant, seed=1, start_ms=START, devices=devices)
    root = f"bench-{uuid.uuid4().hex[:8]}/v1"
    work = [
        (f"{root}/{r.site}/{r.device}/telemetry", r.device, encode([r]))
        for r in sim.run(seconds * 1000)
    ]
    clients: dict[str, mqtt.Client] = {}
    windows: dict[str, threading.Semaphore] = {}
    for device in devices:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        window = threading.Semaphore(INFLIGHT)
        client.on_publish = lambda *_a, w=window: w.release()
        client.max_inflight_messages_set(INFLIGHT)
        client.connect(host, port)
        client.loop_start()
        clients[device], windows[device] = client, window
    t0 = time.perf_counter()
    for topic, device, payload in work:
        windows[device].acquire()
        clients[device].publish(topic, payload, qos=1)
    for device in devices:  # wait for the last acknowledgements
        for _ in range(INFLIGHT):
            windows[device].acquire()
    elapsed = time.perf_counter() - t0
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    return len(work) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600, help="virtual seconds per run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    plant = Plant.from_registry(load_registry(ROOT / "deploy/demo/anshan.yaml"))
    result = generate(plant, args.seconds)
    ours, messages = publish_ours(plant, args.seconds * 4, args.host, args.port)
    bare = publish_bare(plant, args.seconds * 4, args.host, args.port)
    result |= {
        "published_messages": messages,
        "publisher_messages_per_s": ours,
        "bare_paho_messages_per_s": bare,
        "publisher_vs_bare": ours / bare,
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
