"""The MQTT publisher against the real Mosquitto on 127.0.0.1:1883, each test on its own topic
root (and so its own client ids): payloads, seq, retained status, last will, PUBACK counts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hazwatch.errors import SimulatorError
from hazwatch.registry.parse import load_registry
from simulators.delivery import Delivery
from simulators.mqtt_publisher import MqttPublisher, PublisherConfig
from simulators.payload import reading_object
from simulators.plant import Plant
from simulators.scenario import Scenario, load_scenario
from simulators.simulation import Simulation

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START = 1_795_852_800_000
HOST, PORT = "127.0.0.1", 1883
MQTT_DEVICES = ["ps4", "ps5", "ps6", "vr2-co", "vr5-co", "efm1", "lls"]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """Collects everything under a topic root."""

    def __init__(self, root: str) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(HOST, PORT)
        self.client.subscribe(f"{root}/#", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(5)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def where(self, predicate: Callable[[Message], bool]) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if predicate(m)]

    def telemetry(self) -> list[Message]:
        return self.where(lambda m: m.topic.endswith("/telemetry"))

    def statuses(self, device: str) -> list[str]:
        return [m.payload.decode() for m in self.where(lambda m: f"/{device}/status" in m.topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant.from_registry(load_registry(ROOT / "deploy/demo/anshan.yaml"))


@pytest.fixture
def root() -> str:
    return f"hwtest-{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def subscriber(root: str) -> Iterator[Subscriber]:
    sub = Subscriber(root)
    yield sub
    sub.close()


def sim(plant: Plant, scenario: Scenario, devices: list[str] = MQTT_DEVICES) -> Simulation:
    return Simulation(plant, seed=3, start_ms=START, scenario=scenario, devices=devices)


def test_publishes_the_contract_stream_with_seq_and_retained_status(
    plant: Plant, root: str, subscriber: Subscriber
) -> None:
    plan = load_scenario("demo")
    config = PublisherConfig(topic_root=root, speed=0, duration_s=120, max_inflight=5)
    publisher = MqttPublisher(
        sim(plant, plan), config, delivery=Delivery(plan, seed=3, start_ms=START)
    )
    report = publisher.run()

    assert report.messages == report.readings == report.acked > 300
    assert report.unacked == report.rejected == report.unsent == 0
    assert report.virtual_s == pytest.approx(120, abs=0.01)
    wait_for(lambda: len(subscriber.telemetry()) == report.messages)

    expected = list(sim(plant, plan).run(120_000))
    by_device: dict[str, list[dict[str, object]]] = {}
    for m in subscriber.telemetry():
        _, site, device, _ = m.topic.rsplit("/", 3)
        assert site == plant.devices[device].site
        by_device.setdefault(device, []).append(json.loads(m.payload))
    for device in MQTT_DEVICES:
        want = [reading_object(r) for r in expected if r.device == device]
        assert by_device.get(device, []) == want, device
        assert [o["seq"] for o in want] == list(range(1, len(want) + 1))
    assert report.last_seq == {d: len(v) for d, v in by_device.items()}

    def all_offline() -> bool:
        return all(subscriber.statuses(d)[-1:] == ["offline"] for d in MQTT_DEVICES)

    wait_for(all_offline)
    assert all(subscriber.statuses(d)[0] == "online" for d in MQTT_DEVICES)
    late = Subscriber(root)  # a newcomer gets every device's retained status
    try:
        wait_for(
            lambda: len(late.where(lambda m: m.topic.endswith("/status"))) == len(MQTT_DEVICES)
        )
        assert all(m.retain and m.payload == b"offline" for m in late.messages)
    finally:
        late.close()


def test_batches_are_arrays_and_duplicates_are_counted(
    plant: Plant, root: str, subscriber: Subscriber
) -> None:
    plan = load_scenario("faults")
    source = sim(plant, plan, ["ps4", "ps5"])
    config = PublisherConfig(topic_root=root, speed=0, duration_s=400, batch=5, max_inflight=1)
    report = MqttPublisher(source, config, delivery=Delivery(plan, seed=3, start_ms=START)).run()
    produced = list(sim(plant, plan, ["ps4", "ps5"]).run(400_000))

    assert report.duplicated == 2 * sum(
        1 for r in produced if r.device == "ps4" and 300_000 <= r.ts_ms - START < 400_000
    )
    assert report.readings == len(produced) + report.duplicated
    assert report.acked == report.messages < report.readings
    wait_for(lambda: len(subscriber.telemetry()) == report.messages)
    carried = 0
    for m in subscriber.telemetry():
        doc = json.loads(m.payload)  # garbage NaN/Infinity tokens parse with the stdlib
        items = doc if isinstance(doc, list) else [doc]
        assert 1 <= len(items) <= 5
        carried += len(items)
    assert carried == report.readings


def test_disconnect_with_will_marks_a_silent_device_offline_until_it_returns(
    plant: Plant, root: str, subscriber: Subscriber
) -> None:
    plan = load_scenario("silence")  # ps6 drops its connection at 180 s for 120 s
    config = PublisherConfig(topic_root=root, speed=0, duration_s=400)
    report = MqttPublisher(sim(plant, plan, ["ps5", "ps6"]), config).run()
    assert report.unacked == 0
    wait_for(lambda: subscriber.statuses("ps6")[-1:] == ["offline"])
    assert subscriber.statuses("ps6") == ["online", "offline", "online", "offline"]
    assert subscriber.statuses("ps5") == ["online", "offline"]
    ps6 = [json.loads(m.payload) for m in subscriber.telemetry() if "/ps6/" in m.topic]
    times = [(o["ts"] - START) / 1000 for o in ps6]
    assert not [t for t in times if 180 <= t < 300]
    assert [o["seq"] for o in ps6] == list(range(1, len(ps6) + 1))


def test_a_killed_simulator_leaves_its_will(root: str, subscriber: Subscriber) -> None:
    command = [
        sys.executable, "-c", "from hazwatch.cli import main; main()", "simulate", "mqtt",
        "--registry", str(ROOT / "deploy/demo/anshan.yaml"), "--devices", "ps4,efm1",
        "--topic-root", root, "--keepalive", "1", "--speed", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(subscriber.telemetry()) >= 2, timeout_s=20)
        assert subscriber.statuses("ps4") == ["online"]
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    # The broker gives up on a silent client after 1.5 keepalives and publishes its will.
    wait_for(lambda: subscriber.statuses("ps4")[-1:] == ["offline"], timeout_s=10)
    wait_for(lambda: subscriber.statuses("efm1")[-1:] == ["offline"], timeout_s=10)


def test_pacing_runs_virtual_time_at_the_given_speed(plant: Plant, root: str) -> None:
    config = PublisherConfig(topic_root=root, speed=50, duration_s=30)
    report = MqttPublisher(sim(plant, load_scenario("quiet"), ["efm1"]), config).run()
    assert report.real_s >= 30 / 50 - 0.05  # it cannot run ahead of the clock
    assert report.messages == report.acked == 30  # efm1 reads once a second


def test_stop_from_another_thread_ends_cleanly(
    plant: Plant, root: str, subscriber: Subscriber
) -> None:
    config = PublisherConfig(topic_root=root, speed=20)
    publisher = MqttPublisher(sim(plant, load_scenario("quiet"), ["efm1"]), config)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(publisher.run()))
    thread.start()
    wait_for(lambda: len(subscriber.telemetry()) >= 10)
    publisher.stop()
    thread.join(10)
    assert not thread.is_alive()
    (report,) = result
    assert report.messages == report.acked >= 10  # type: ignore[attr-defined]
    wait_for(lambda: subscriber.statuses("efm1")[-1:] == ["offline"])


def test_an_unreachable_broker_is_a_clear_error(plant: Plant, root: str) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = PublisherConfig(port=port, topic_root=root, connect_timeout_s=1.0, speed=0)
    with pytest.raises(SimulatorError, match=f"{HOST}:{port}"):
        MqttPublisher(sim(plant, load_scenario("quiet"), ["efm1"]), config).run()
