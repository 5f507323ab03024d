"""decode: the MQTT contract, every refusal with its reason, and no input that makes it raise."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hazwatch.domain import Quality
from ingest.decode import (
    ColumnBuilder,
    DecodeLimits,
    DeviceChannels,
    Reason,
    SensorIndex,
    decode_status,
    decode_telemetry,
    parse_topic,
)

NOW_MS = 1_764_300_000_000
NOW_US = NOW_MS * 1000
LIMITS = DecodeLimits(
    max_payload_bytes=300_000, max_future_us=300 * 10**6, max_age_us=365 * 86_400 * 10**6
)
INDEX = SensorIndex(
    devices={
        "det1": DeviceChannels("north", {"co1": (11, 0.0, 1000.0), "co2": (12, 0.0, 1000.0)}),
        "det9": DeviceChannels("south", {"co1": (91, 0.0, 1000.0)}),
    }
)


def decode(payload: object, *, site: str = "north", device: str = "det1"):
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    out = ColumnBuilder()
    rejections = decode_telemetry(
        raw, site=site, device=device, index=INDEX, limits=LIMITS, now_us=NOW_US, out=out
    )
    seq = out.seq.tolist()
    batch = out.take()
    rows = list(
        zip(
            batch.sensor_id.tolist(),
            batch.ts_us.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            seq,
            strict=True,
        )
    )
    return rows, {r.reason: r.readings for r in rejections}


def test_object_with_epoch_ms() -> None:
    rows, refused = decode({"ts": NOW_MS, "values": {"co1": 12.5, "co2": 3}, "seq": 7})
    assert rows == [(11, NOW_US, 12.5, 0, 7), (12, NOW_US, 3.0, 0, 7)]
    assert refused == {}


def test_array_with_rfc3339_and_quality() -> None:
    rows, refused = decode(
        [
            {"ts": "2025-11-28T03:20:00.123456Z", "values": {"co1": 1}},
            {
                "ts": "2025-11-28T11:20:00+08:00",
                "values": {"co1": 2, "co2": 5},
                "quality": {"co2": int(Quality.UNCERTAIN)},
            },
        ]
    )
    assert rows == [
        (11, NOW_US + 123_456, 1.0, 0, -1),
        (11, NOW_US, 2.0, 0, -1),
        (12, NOW_US, 5.0, int(Quality.UNCERTAIN), -1),
    ]
    assert refused == {}


def test_null_value_is_stored_as_a_bad_reading() -> None:
    rows, refused = decode(
        {
            "ts": NOW_MS,
            "values": {"co1": None, "co2": None},
            "quality": {"co1": int(Quality.COMM_TIMEOUT)},
        }
    )
    assert refused == {}
    assert rows[0][:2] == (11, NOW_US)
    assert math.isnan(rows[0][2])
    assert rows[0][3] == Quality.COMM_TIMEOUT
    assert math.isnan(rows[1][2])
    assert rows[1][3] == Quality.BAD  # null with good quality: stored, but as bad


def test_bad_quality_value_skips_the_range_check() -> None:
    rows, refused = decode(
        {"ts": NOW_MS, "values": {"co1": -1}, "quality": {"co1": int(Quality.SENSOR_FAULT)}}
    )
    assert rows == [(11, NOW_US, -1.0, int(Quality.SENSOR_FAULT), -1)]
    assert refused == {}


@pytest.mark.parametrize(
    ("payload", "reason", "readings"),
    [
        (b"{not json", Reason.MALFORMED_JSON, 0),
        (b"", Reason.MALFORMED_JSON, 0),
        (b"\xff\xfe", Reason.MALFORMED_JSON, 0),
        (b"[" * 100_000 + b"]" * 100_000, Reason.MALFORMED_JSON, 0),
        (b"x" * 300_001, Reason.TOO_LARGE, 0),
        (b"42", Reason.BAD_SCHEMA, 0),
        (b"[]", Reason.BAD_SCHEMA, 0),
        ({"values": {"co1": 1}}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS * 1.0, "values": {"co1": 1}}, Reason.BAD_SCHEMA, 1),
        ({"ts": "2025-11-28T03:20:00", "values": {"co1": 1}}, Reason.BAD_SCHEMA, 1),
        ({"ts": True, "values": {"co1": 1}}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS, "values": {}}, Reason.BAD_SCHEMA, 0),
        ({"ts": NOW_MS, "values": {"co1": "12"}}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS, "values": {"co1": True}}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS, "values": {"co1": 1}, "quality": {"co1": -1}}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS, "values": {"co1": 1}, "seq": "x"}, Reason.BAD_SCHEMA, 1),
        ({"ts": NOW_MS, "values": {"nope": 1}}, Reason.UNKNOWN_SENSOR, 1),
        ({"ts": NOW_MS, "values": {"co1": 1000.5}}, Reason.OUT_OF_RANGE, 1),
        ({"ts": NOW_MS, "values": {"co1": -0.1}}, Reason.OUT_OF_RANGE, 1),
        (b'{"ts": 1764300000000, "values": {"co1": NaN}}', Reason.NOT_FINITE, 1),
        (b'{"ts": 1764300000000, "values": {"co1": -Infinity}}', Reason.NOT_FINITE, 1),
        (b'{"ts": 1764300000000, "values": {"co1": 1e400}}', Reason.NOT_FINITE, 1),
        ({"ts": NOW_MS + 301_000, "values": {"co1": 1, "co2": 2}}, Reason.FUTURE_TS, 2),
        ({"ts": NOW_MS - 366 * 86_400_000, "values": {"co1": 1}}, Reason.ANCIENT_TS, 1),
        # ms * 1000 would overflow int64: refused before it reaches a column
        ({"ts": 10**17, "values": {"co1": 1}}, Reason.FUTURE_TS, 1),
        ({"ts": -(10**17), "values": {"co1": 1}}, Reason.ANCIENT_TS, 1),
        (b'{"ts": 100000000000000000000000000, "values": {"co1": 1}}', Reason.BAD_SCHEMA, 1),
    ],
)
def test_each_refusal_has_its_reason(payload: object, reason: str, readings: int) -> None:
    rows, refused = decode(payload)
    assert rows == []
    assert refused == {reason: readings}


def test_device_level_refusals() -> None:
    assert decode({"ts": NOW_MS, "values": {"co1": 1}}, device="ghost")[1] == {
        Reason.UNKNOWN_DEVICE: 0
    }
    # det9 is registered on site south; it may not publish under north.
    assert decode({"ts": NOW_MS, "values": {"co1": 1}}, device="det9")[1] == {Reason.WRONG_SITE: 0}


def test_good_readings_survive_bad_neighbours() -> None:
    rows, refused = decode(
        [
            {"ts": NOW_MS, "values": {"co1": 1, "nope": 2, "co2": 5000}},
            "junk",
            {"ts": NOW_MS + 1, "values": {"co2": 4}},
        ]
    )
    assert rows == [(11, NOW_US, 1.0, 0, -1), (12, NOW_US + 1000, 4.0, 0, -1)]
    assert refused == {Reason.UNKNOWN_SENSOR: 1, Reason.OUT_OF_RANGE: 1, Reason.BAD_SCHEMA: 0}


def test_rejection_detail_names_the_readings() -> None:
    out = ColumnBuilder()
    [rejection] = decode_telemetry(
        orjson.dumps({"ts": NOW_MS, "values": {f"x{i}": 1 for i in range(8)}}),
        site="north",
        device="det1",
        index=INDEX,
        limits=LIMITS,
        now_us=NOW_US,
        out=out,
    )
    assert rejection.reason == Reason.UNKNOWN_SENSOR
    assert rejection.readings == 8
    assert rejection.detail.startswith("[0] det1/x0; [0] det1/x1")
    assert rejection.detail.endswith("(+3 more)")


def test_topics_and_status() -> None:
    t = parse_topic("hazwatch/v1/north/det1/telemetry", "hazwatch/v1")
    assert t is not None
    assert (t.site, t.device, t.kind) == ("north", "det1", "telemetry")
    assert parse_topic("hazwatch/v1/north/telemetry", "hazwatch/v1") is None
    assert parse_topic("other/north/det1/telemetry", "hazwatch/v1") is None
    assert decode_status(b" Online\n") == "online"
    assert decode_status(b"offline") == "offline"
    assert decode_status(b"maybe") is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
channel_names = st.sampled_from(["co1", "co2", "nope", ""]) | st.text(max_size=6)
reading_objects = st.fixed_dictionaries(
    {
        "ts": st.integers(NOW_MS - 10**12, NOW_MS + 10**7)
        | st.just("2025-11-28T03:20:00Z")
        | json_values,
        "values": st.dictionaries(
            channel_names,
            st.none()
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.integers()
            | json_values,
            max_size=4,
        )
        | json_values,
    },
    optional={
        "quality": st.dictionaries(channel_names, st.integers(-5, 40_000) | json_values)
        | json_values,
        "seq": st.integers() | json_values,
    },
)


def _to_bytes(doc: object) -> bytes:
    return json.dumps(doc).encode()  # the stdlib writes NaN/Infinity, as sloppy devices do


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        reading_objects.map(_to_bytes),
        st.lists(reading_objects | json_values, max_size=4).map(_to_bytes),
        json_values.map(_to_bytes),
    )
)
def test_decode_never_raises_and_keeps_only_valid_rows(payload: bytes) -> None:
    out = ColumnBuilder()
    rejections = decode_telemetry(
        payload, site="north", device="det1", index=INDEX, limits=LIMITS, now_us=NOW_US, out=out
    )
    batch = out.take()
    assert all(r.reason for r in rejections)
    assert set(batch.sensor_id.tolist()) <= {11, 12}
    good = batch.quality < 64
    assert bool(((batch.value[good] >= 0) & (batch.value[good] <= 1000)).all())
    assert bool((batch.ts_us <= NOW_US + LIMITS.max_future_us).all())
    assert not bool(
        (~((batch.value >= -math.inf) & (batch.value <= math.inf)) & (batch.quality < 64)).any()
    )  # a NaN value (no value) always carries a bad quality
