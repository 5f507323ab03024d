"""MQTT payloads to reading columns: pure, total (never raises on any input), cheap per message.

The contract (docs/ingest.md, ARCHITECTURE.md): topic `<root>/<site>/<device>/telemetry`,
payload a JSON object or array of objects

    {"ts": <epoch ms int | RFC 3339 string>, "values": {"<channel>": <number|null>},
     "quality": {"<channel>": <int>}?, "seq": <int>?}

A reading is one (channel, value) of one object; its sensor is `<device>/<channel>` in the
registry. Good readings are appended to a `ColumnBuilder`; everything refused comes back as
`Rejection`s (one per reason per message, with a count and examples) for the quarantine table.
A message can be partly stored: one unknown channel does not hold back its neighbours.

Choices worth knowing:
- `ts` is required (a server-side timestamp would make a redelivered message a new reading);
  an RFC 3339 string must carry an offset.
- A `null` value is a reading without a value. With a bad quality code (>= 64) it is stored as
  sent; with a good or missing quality it is stored with quality 64 (BAD): "no value" is never
  a good reading, and the alarm engine's bad-quality rule should see it.
- The physical range is checked on usable readings only (quality < 64): a device reporting a
  fault may send any number with it, and that number is kept, flagged by its quality.
- orjson refuses NaN, Infinity and numbers beyond float range; such payloads are parsed again
  with the standard library so those readings are refused as `not_finite` and the rest kept.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import isfinite

import numpy as np
import orjson

from hazwatch.domain import BAD_QUALITY_MIN, US_PER_MS, ReadingBatch
from hazwatch.registry.snapshot import RegistrySnapshot

QUALITY_MAX = 32_767  # readings.quality is a smallint
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_EXAMPLES = 5  # offending readings named in a rejection's detail


class Reason:
    """Quarantine reason codes (the `reason` column and the metric label)."""

    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_SENSOR = "unknown_sensor"
    WRONG_SITE = "wrong_site"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TS = "future_ts"
    ANCIENT_TS = "ancient_ts"
    BAD_STATUS = "bad_status"
    DECODE_ERROR = "decode_error"  # a bug in the decoder; never expected
    SEQ_GAP = "seq_gap"  # not a payload: a device's numbered messages that never arrived


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    readings: int  # readings refused (0 when the message could not be read at all)
    detail: str


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int
    max_future_us: int
    max_age_us: int  # older than this (the raw retention) is refused


@dataclass(frozen=True, slots=True)
class DeviceChannels:
    site_key: str
    # channel -> (sensor_id, range_min, range_max)
    channels: Mapping[str, tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class SensorIndex:
    """The registry as the decoder needs it: device -> site and channel -> sensor and range."""

    devices: Mapping[str, DeviceChannels]

    @classmethod
    def from_snapshot(cls, snapshot: RegistrySnapshot) -> SensorIndex:
        devices: dict[str, DeviceChannels] = {}
        for key, device in snapshot.devices.items():
            devices[key] = DeviceChannels(
                site_key=device.site_key,
                channels={
                    s.channel: (s.sensor_id, float(s.range_min), float(s.range_max))
                    for s in device.sensors
                },
            )
        return cls(devices=devices)


class ColumnBuilder:
    """Growable typed columns the decoder appends to; `take()` turns them into a ReadingBatch.

    array.array appends cost a fraction of a numpy element write, and the arrays become numpy
    columns without a copy per element, so a burst of messages costs one batch allocation.
    """

    __slots__ = ("object_seq", "quality", "sensor_id", "seq", "ts_us", "value")

    def __init__(self) -> None:
        self.sensor_id = array("i")
        self.ts_us = array("q")
        self.value = array("d")  # NaN: no value
        self.quality = array("h")
        self.seq = array("q")  # -1: the message had none (not stored; for checks and tests)
        # The seq of every reading object whose header was valid, whatever became of its
        # values: the device sent that number (for sequence-gap detection, ingest.seqgaps).
        self.object_seq = array("q")

    def __len__(self) -> int:
        return len(self.sensor_id)

    def take(self) -> ReadingBatch:
        """The rows so far as a batch; the builder starts empty again."""
        batch = ReadingBatch(
            sensor_id=np.frombuffer(self.sensor_id, dtype=np.int32).copy(),
            ts_us=np.frombuffer(self.ts_us, dtype=np.int64).copy(),
            value=np.frombuffer(self.value, dtype=np.float64).copy(),
            quality=np.frombuffer(self.quality, dtype=np.int16).copy(),
        )
        self.__init__()  # type: ignore[misc]
        return batch


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    device: str
    kind: str  # "telemetry" or "status"


def parse_topic(topic: str, root: str) -> Topic | None:
    """`<root>/<site>/<device>/<kind>` split into its parts; None if it has another shape."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    return Topic(parts[0], parts[1], parts[2])


def decode_status(payload: bytes | bytearray) -> str | None:
    """A device status payload (`online` / `offline`, any case and surrounding space)."""
    text = payload.strip().lower()
    if text in (b"online", b"offline"):
        return bytes(text).decode()
    return None


def parse_ts_us(raw: object) -> int | None:
    """A payload timestamp as epoch microseconds: int milliseconds or an RFC 3339 string."""
    if type(raw) is int:
        return raw * US_PER_MS
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return None
        try:
            return (parsed - _EPOCH) // _ONE_US
        except OverflowError:
            return None
    return None


class _Refusals:
    """Refused readings of one message, grouped by reason."""

    __slots__ = ("_by_reason",)

    def __init__(self) -> None:
        self._by_reason: dict[str, tuple[int, list[str]]] | None = None

    def add(self, reason: str, what: str, readings: int = 1) -> None:
        if self._by_reason is None:
            self._by_reason = {}
        count, examples = self._by_reason.get(reason, (0, []))
        if len(examples) < _EXAMPLES:
            examples.append(what)
        self._by_reason[reason] = (count + readings, examples)

    def result(self) -> list[Rejection]:
        if self._by_reason is None:
            return []
        out = []
        for reason, (count, examples) in self._by_reason.items():
            more = f" (+{count - len(examples)} more)" if count > len(examples) else ""
            out.append(Rejection(reason, count, "; ".join(examples) + more))
        return out


def _loads(payload: bytes | bytearray) -> tuple[object, str | None]:
    """Parse JSON; (None, error) if it is not JSON at all."""
    try:
        return orjson.loads(payload), None
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    # NaN, Infinity and 1e400 are not JSON, but they are a number problem, not a syntax one.
    try:
        return json.loads(payload), None
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None, first_error


def decode_telemetry(
    payload: bytes | bytearray,
    *,
    site: str,
    device: str,
    index: SensorIndex,
    limits: DecodeLimits,
    now_us: int,
    out: ColumnBuilder,
) -> list[Rejection]:
    """Append the good readings of one message to `out`; return what was refused and why."""
    if len(payload) > limits.max_payload_bytes:
        return [
            Rejection(
                Reason.TOO_LARGE,
                0,
                f"payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}",
            )
        ]
    doc, error = _loads(payload)
    if error is not None:
        return [Rejection(Reason.MALFORMED_JSON, 0, error[:200])]
    registered = index.devices.get(device)
    if registered is None:
        return [Rejection(Reason.UNKNOWN_DEVICE, 0, f"device {device!r} is not registered")]
    if registered.site_key != site:
        return [
            Rejection(
                Reason.WRONG_SITE,
                0,
                f"device {device!r} belongs to site {registered.site_key!r}, not {site!r}",
            )
        ]
    if isinstance(doc, dict):
        objects: list[object] = [doc]
    elif isinstance(doc, list) and doc:
        objects = doc
    else:
        return [Rejection(Reason.BAD_SCHEMA, 0, "payload must be an object or non-empty array")]

    refused = _Refusals()
    channels = registered.channels
    latest_us = now_us + limits.max_future_us
    earliest_us = now_us - limits.max_age_us
    position = -1
    for obj in objects:
        position += 1
        head = _object_head(obj, latest_us, earliest_us)
        if isinstance(head, _Problem):
            refused.add(head.reason, f"[{position}] {head.detail}", head.readings)
        else:
            out.object_seq.append(head[2])
            _append_values(head, channels, f"[{position}] {device}/", refused, out)
    return refused.result()


@dataclass(frozen=True, slots=True)
class _Problem:
    reason: str
    detail: str
    readings: int


# values, ts_us, seq, quality map
_Head = tuple[dict[str, object], int, int, dict[str, int] | None]


def _object_head(obj: object, latest_us: int, earliest_us: int) -> _Head | _Problem:  # noqa: PLR0911
    """The checked header of one reading object, or why it is refused as a whole."""
    if type(obj) is not dict:
        return _Problem(Reason.BAD_SCHEMA, "is not an object", 0)
    values = obj.get("values")
    if type(values) is not dict or not values:
        return _Problem(Reason.BAD_SCHEMA, "needs a non-empty 'values' object", 0)
    raw_ts = obj.get("ts")
    ts_us = raw_ts * US_PER_MS if type(raw_ts) is int else parse_ts_us(raw_ts)
    if ts_us is None:
        detail = "'ts' must be epoch milliseconds or RFC 3339 with an offset"
        return _Problem(Reason.BAD_SCHEMA, detail, len(values))
    if ts_us > latest_us:
        return _Problem(Reason.FUTURE_TS, f"ts {raw_ts!r}", len(values))
    if ts_us < earliest_us:
        return _Problem(Reason.ANCIENT_TS, f"ts {raw_ts!r}", len(values))
    seq = obj.get("seq", -1)
    if type(seq) is not int or not -1 <= seq < 2**63:
        return _Problem(Reason.BAD_SCHEMA, "'seq' must be an integer", len(values))
    quality_map = obj.get("quality")
    if quality_map is not None and not _valid_quality_map(quality_map):
        detail = f"'quality' must map channels to integers 0..{QUALITY_MAX}"
        return _Problem(Reason.BAD_SCHEMA, detail, len(values))
    return values, ts_us, seq, quality_map


def _append_values(
    head: _Head,
    channels: Mapping[str, tuple[int, float, float]],
    where: str,
    refused: _Refusals,
    out: ColumnBuilder,
) -> None:
    """Append an object's good readings to `out`; note the refused ones."""
    values, ts_us, seq, quality_map = head
    add_sensor, add_ts, add_value = out.sensor_id.append, out.ts_us.append, out.value.append
    add_quality, add_seq = out.quality.append, out.seq.append
    for channel, raw in values.items():
        sensor = channels.get(channel)
        if sensor is None:
            refused.add(Reason.UNKNOWN_SENSOR, where + channel)
            continue
        quality = quality_map.get(channel, 0) if quality_map else 0
        if type(raw) is float or type(raw) is int:
            try:
                value = float(raw)
            except OverflowError:
                value = math.inf
            if not isfinite(value):
                refused.add(Reason.NOT_FINITE, f"{where}{channel}={raw!r}"[:80])
                continue
            if quality < BAD_QUALITY_MIN and not sensor[1] <= value <= sensor[2]:
                refused.add(
                    Reason.OUT_OF_RANGE,
                    f"{where}{channel}={value!r} outside [{sensor[1]!r}, {sensor[2]!r}]",
                )
                continue
        elif raw is None:
            value = math.nan
            quality = max(quality, BAD_QUALITY_MIN)
        else:
            refused.add(Reason.BAD_SCHEMA, f"{where}{channel} is not a number or null")
            continue
        add_sensor(sensor[0])
        add_ts(ts_us)
        add_value(value)
        add_quality(quality)
        add_seq(seq)


def _valid_quality_map(quality_map: object) -> bool:
    return isinstance(quality_map, dict) and all(
        type(q) is int and 0 <= q <= QUALITY_MAX for q in quality_map.values()
    )
