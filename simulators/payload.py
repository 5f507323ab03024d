"""The MQTT contract (v1) as bytes: topics and telemetry payloads.

Telemetry `<root>/<site>/<device>/telemetry` carries `{"ts": <epoch ms>, "values": {...},
"quality": {...}, "seq": n}` (quality only when some channel is not GOOD), or a JSON array of
such objects for a batch. Status `<root>/<site>/<device>/status` carries `online`/`offline`.

Garbage faults put NaN and infinity into values on purpose: those payloads are written with the
`NaN`/`Infinity` tokens (what a careless device sends), not silently turned into null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import orjson

from simulators.simulation import DeviceReading

ONLINE = b"online"
OFFLINE = b"offline"


def telemetry_topic(root: str, site: str, device: str) -> str:
    return f"{root}/{site}/{device}/telemetry"


def status_topic(root: str, site: str, device: str) -> str:
    return f"{root}/{site}/{device}/status"


def reading_object(r: DeviceReading) -> dict[str, Any]:
    obj: dict[str, Any] = {"ts": r.ts_ms, "values": dict(r.values)}
    if r.quality:
        obj["quality"] = dict(r.quality)
    obj["seq"] = r.seq
    return obj


def encode(readings: Sequence[DeviceReading]) -> bytes:
    """One reading as an object, several as an array."""
    if not readings:
        raise ValueError("nothing to encode")
    objs = [reading_object(r) for r in readings]
    doc: Any = objs[0] if len(objs) == 1 else objs
    finite = all(v is None or math.isfinite(v) for r in readings for v in r.values.values())
    if finite:
        return orjson.dumps(doc)
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
