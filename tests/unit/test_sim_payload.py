"""Payloads per the MQTT contract, and the export/replay round trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import orjson
import pytest

from hazwatch.errors import SimulatorError
from hazwatch.registry.parse import load_registry
from simulators.export import write_csv, write_jsonl
from simulators.payload import encode, status_topic, telemetry_topic
from simulators.scenario import load_scenario
from simulators.simulation import DeviceReading, Simulation
from simulators.source import RecordedSource

ROOT = Path(__file__).resolve().parents[2]
START = 1_795_852_800_000


def reading(**values: float | None) -> DeviceReading:
    quality = {k: 65 for k, v in values.items() if v is None}
    return DeviceReading("tankfarm", "efm1", START, values, quality, 7)


def test_one_reading_is_an_object_in_the_contract_shape() -> None:
    doc = orjson.loads(encode([reading(field=0.12)]))
    assert doc == {"ts": START, "values": {"field": 0.12}, "seq": 7}


def test_quality_appears_only_when_a_channel_is_not_good() -> None:
    doc = orjson.loads(encode([reading(co=None, fault=3)]))
    assert doc["values"] == {"co": None, "fault": 3}
    assert doc["quality"] == {"co": 65}


def test_a_batch_is_an_array() -> None:
    doc = orjson.loads(encode([reading(field=1.0), reading(field=2.0)]))
    assert isinstance(doc, list)
    assert [d["values"]["field"] for d in doc] == [1.0, 2.0]


def test_garbage_keeps_nan_and_infinity_tokens() -> None:
    raw = encode([reading(a=float("nan"), b=float("inf"))])
    assert b"NaN" in raw
    assert b"Infinity" in raw
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)  # strict JSON parsers refuse it, as they should
    assert json.loads(raw)["values"]["b"] == float("inf")


def test_topics() -> None:
    assert telemetry_topic("hazwatch/v1", "s", "d") == "hazwatch/v1/s/d/telemetry"
    assert status_topic("x/y", "s", "d") == "x/y/s/d/status"


@pytest.fixture(scope="module")
def stream() -> list[DeviceReading]:
    registry = load_registry(ROOT / "deploy/demo/anshan.yaml")
    sim = Simulation(registry, seed=1, start_ms=START, scenario=load_scenario("faults"))
    return list(sim.run(200_000))


def test_jsonl_export_replays_identically(stream: list[DeviceReading], tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with path.open("w") as f:
        assert write_jsonl(stream, f) == len(stream)
    source = RecordedSource(path)
    assert source.start_ms == stream[0].ts_ms
    replayed = source.advance_to(START + 100_000) + source.advance_to(START + 10**9)
    assert len(replayed) == len(stream)
    for a, b in zip(replayed, stream, strict=True):
        assert (a.device, a.ts_ms, a.seq, a.quality) == (b.device, b.ts_ms, b.seq, b.quality)
        assert json.dumps(a.values) == json.dumps(b.values)  # NaN-aware comparison
    assert source.next_due_ms() is None


def test_replay_can_shift_to_now(stream: list[DeviceReading], tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with path.open("w") as f:
        write_jsonl(stream[:10], f)
    source = RecordedSource(path, shift_ms=1000)
    assert source.start_ms == stream[0].ts_ms + 1000


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"site":"s","device":"d","ts":1,"values":{},"seq":1}\n{"oops": 1}\n')
    with pytest.raises(SimulatorError, match=r"bad.jsonl:2"):
        RecordedSource(path)


def test_csv_has_one_row_per_channel(stream: list[DeviceReading]) -> None:
    out = io.StringIO()
    write_csv(stream[:50], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == sum(len(r.values) for r in stream[:50])
    assert rows[0]["ts"].endswith("+00:00")
    assert int(rows[0]["ts_ms"]) == stream[0].ts_ms
