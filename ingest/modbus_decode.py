"""Modbus registers to engineering values, and the read planner. Pure: no clock, no I/O.

Three steps, each a plain function the collector and the simulator share:

1. `plan_device` turns a device's register map (from the registry) into a `DevicePlan`: per
   poll group, the few contiguous reads that cover every point, status word and decimals
   register of that group.
2. `decode_group` turns the answers to one group's reads into readings (sensor id, value,
   quality) and rejects (values that must not be stored: NaN/inf, outside the sensor's
   physical range, an impossible decimals register).
3. `encode_value` is the inverse of the value decoding; the simulator writes registers with it
   and the property tests hold the pair to a round trip.

The read planner's gap rule: points of one (poll group, function code) are sorted by address
and joined greedily into one read while the read stays within the Modbus limit (125 registers,
2000 bits) and the unmapped stretch between two points is at most `read_gap` registers
(`16 * read_gap` bits). Over a serial gateway a register costs 2 bytes on the wire, a second
request costs a frame, two silent intervals and the device's turnaround (tens of
milliseconds), so bridging up to 8 registers is always the cheaper choice. Devices that answer
"illegal data address" for registers they do not implement need `read_gap: 0`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hazwatch.domain import Quality
from hazwatch.registry.modbus_map import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    DataType,
    ModbusDevice,
    ModbusPoint,
    WordOrder,
    protocol_address,
)

MAX_DECIMALS = 6  # a decimals register beyond this is junk, not a precision

_STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_INTEGER_LIMITS = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


# --------------------------------------------------------------------------------------------
# Word order and raw values


def _reorder(data: bytes, order: WordOrder) -> bytes:
    """Swap between wire order and big-endian (ABCD) order; the swap is its own inverse."""
    if order in (WordOrder.BADC, WordOrder.DCBA):
        swapped = bytearray(len(data))
        swapped[0::2] = data[1::2]
        swapped[1::2] = data[0::2]
        data = bytes(swapped)
    if order in (WordOrder.CDAB, WordOrder.DCBA):
        words = [data[i : i + 2] for i in range(0, len(data), 2)]
        data = b"".join(reversed(words))
    return data


def registers_to_raw(registers: Sequence[int], dtype: DataType, order: WordOrder) -> float:
    """The raw number held by `dtype.registers` registers in the given word order.

    For `bits` and `bool` this is the register (or bit) itself; masks are applied later.
    """
    if len(registers) != dtype.registers:
        raise ValueError(f"{dtype} needs {dtype.registers} register(s), got {len(registers)}")
    if dtype in (DataType.BITS, DataType.BOOL):
        return float(registers[0] & 0xFFFF)
    wire = b"".join((r & 0xFFFF).to_bytes(2, "big") for r in registers)
    # A single register has no word order: its bytes are always big-endian.
    big = wire if dtype.registers == 1 else _reorder(wire, order)
    (value,) = struct.unpack(">" + _STRUCT[dtype], big)
    return float(value)


def raw_to_registers(
    raw: float, dtype: DataType, order: WordOrder, *, saturate: bool = False
) -> list[int]:
    """Inverse of `registers_to_raw`. Integers are rounded and must fit the type; with
    `saturate` they are clamped to it instead (NaN becomes 0), as a device's output does."""
    if dtype in (DataType.BITS, DataType.BOOL):
        return [int(raw) & 0xFFFF if math.isfinite(raw) else 0]
    packed: int | float = raw
    if dtype in _INTEGER_LIMITS:
        low, high = _INTEGER_LIMITS[dtype]
        if saturate:
            raw = 0.0 if math.isnan(raw) else min(max(raw, low), high)
        elif not math.isfinite(raw):
            raise ValueError(f"{raw} does not fit {dtype}")
        packed = round(raw)
        if not low <= packed <= high:
            raise ValueError(f"{raw} does not fit {dtype}")
    big = struct.pack(">" + _STRUCT[dtype], packed)
    wire = big if dtype.registers == 1 else _reorder(big, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


def engineering_value(raw: float, point: PointSpec, decimals: int | None) -> float:
    """raw / 10**decimals (when the point has a decimals register), then * scale + offset."""
    if point.mask is not None:
        return 1.0 if int(raw) & point.mask else 0.0
    value = raw if decimals is None else raw / 10.0**decimals
    return value * point.scale + point.offset


def encode_value(
    value: float, point: PointSpec, decimals: int | None = None, *, saturate: bool = False
) -> list[int]:
    """Registers that decode to `value` (for the simulator). For a `bits` point the result
    is the mask when the value is non-zero, else 0; callers OR it into the shared register."""
    if point.mask is not None:
        return [point.mask if value and not math.isnan(value) else 0]
    if point.type is DataType.BOOL:
        return [1 if value and not math.isnan(value) else 0]
    raw = (value - point.offset) / point.scale
    if decimals is not None:
        raw *= 10.0**decimals
    return raw_to_registers(raw, point.type, point.word_order, saturate=saturate)


def decimals_for(value: float, point: PointSpec, most: int = 3) -> int:
    """The most decimal places (up to `most`) with which `value` still fits the point's type:
    what a device with a decimals register reports."""
    low, high = _INTEGER_LIMITS.get(point.type, (-(2**15), 2**15 - 1))
    raw = (value - point.offset) / point.scale
    if not math.isfinite(raw):
        return 0
    for decimals in range(most, 0, -1):
        if low <= round(raw * 10**decimals) <= high:
            return decimals
    return 0


# --------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One sensor's point, resolved: protocol address, word order, physical range."""

    sensor_id: int
    channel: str
    fc: int
    address: int  # protocol (0-based)
    type: DataType
    word_order: WordOrder
    scale: float
    offset: float
    decimals_address: int | None  # protocol address, same table as the point
    mask: int | None
    group: str
    range_min: float
    range_max: float


@dataclass(frozen=True, slots=True)
class StatusSpec:
    fc: int
    address: int  # protocol
    fault_mask: int | None
    fault_values: frozenset[int]
    applies_to: frozenset[str] | None  # None: every channel of the device
    group: str

    def is_fault(self, register: int) -> bool:
        if self.fault_mask is not None and register & self.fault_mask:
            return True
        return register in self.fault_values


@dataclass(frozen=True, slots=True)
class ReadRequest:
    fc: int
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class GroupPlan:
    name: str
    period_s: float
    reads: tuple[ReadRequest, ...]
    points: tuple[PointSpec, ...]
    status: tuple[StatusSpec, ...]


@dataclass(frozen=True, slots=True)
class DevicePlan:
    key: str
    unit: int
    timeout_s: float
    groups: tuple[GroupPlan, ...]
    channels: frozenset[str]

    @property
    def sensor_ids(self) -> tuple[int, ...]:
        return tuple(p.sensor_id for g in self.groups for p in g.points)


@dataclass(frozen=True, slots=True)
class SensorPoint:
    """What the planner needs of a sensor: the registry's `SensorInfo` carries all of it."""

    sensor_id: int
    channel: str
    point: ModbusPoint
    range_min: float
    range_max: float


def resolve_point(sensor: SensorPoint, device: ModbusDevice) -> PointSpec:
    point = sensor.point
    decimals = None
    if point.decimals_address is not None:
        decimals = protocol_address(point.decimals_address, point.fc, device.addressing)
    return PointSpec(
        sensor_id=sensor.sensor_id,
        channel=sensor.channel,
        fc=point.fc,
        address=protocol_address(point.address, point.fc, device.addressing),
        type=point.type,
        word_order=point.word_order or device.word_order,
        scale=point.scale,
        offset=point.offset,
        decimals_address=decimals,
        mask=point.mask,
        group=point.group,
        range_min=sensor.range_min,
        range_max=sensor.range_max,
    )


def plan_device(key: str, device: ModbusDevice, sensors: Iterable[SensorPoint]) -> DevicePlan:
    """Resolve every point and status word and plan each poll group's reads."""
    points = [resolve_point(s, device) for s in sensors]
    status = [
        StatusSpec(
            fc=w.fc,
            address=protocol_address(w.address, w.fc, device.addressing),
            fault_mask=w.fault_mask,
            fault_values=frozenset(w.fault_values or ()),
            applies_to=None if w.applies_to is None else frozenset(w.applies_to),
            group=w.group,
        )
        for w in device.status
    ]
    for p in points:
        if p.group not in device.poll_groups:
            raise ValueError(f"{key}/{p.channel}: unknown poll group {p.group!r}")
    groups = []
    for name, period_s in device.poll_groups.items():
        g_points = tuple(p for p in points if p.group == name)
        g_status = tuple(w for w in status if w.group == name)
        if not g_points and not g_status:
            continue
        spans: list[ReadRequest] = []
        for p in g_points:
            count = 1 if p.type is DataType.BOOL else p.type.registers
            spans.append(ReadRequest(p.fc, p.address, count))
            if p.decimals_address is not None:
                spans.append(ReadRequest(p.fc, p.decimals_address, 1))
        spans.extend(ReadRequest(w.fc, w.address, 1) for w in g_status)
        groups.append(
            GroupPlan(
                name=name,
                period_s=period_s,
                reads=plan_reads(spans, read_gap=device.read_gap),
                points=g_points,
                status=g_status,
            )
        )
    return DevicePlan(
        key=key,
        unit=device.unit,
        timeout_s=device.timeout_s,
        groups=tuple(groups),
        channels=frozenset(p.channel for p in points),
    )


def plan_reads(spans: Iterable[ReadRequest], *, read_gap: int) -> tuple[ReadRequest, ...]:
    """Join spans of one function code each into as few reads as the limits allow."""
    reads: list[ReadRequest] = []
    by_fc: dict[int, list[ReadRequest]] = {}
    for span in spans:
        by_fc.setdefault(span.fc, []).append(span)
    for fc in sorted(by_fc):
        bits = fc in (1, 2)
        limit = MAX_BITS_PER_READ if bits else MAX_REGISTERS_PER_READ
        gap = read_gap * 16 if bits else read_gap
        start = end = -1
        for span in sorted(by_fc[fc], key=lambda s: (s.address, s.count)):
            if start >= 0 and span.address - end <= gap and max(end, span.end) - start <= limit:
                end = max(end, span.end)
                continue
            if start >= 0:
                reads.append(ReadRequest(fc, start, end - start))
            start, end = span.address, span.end
        if start >= 0:
            reads.append(ReadRequest(fc, start, end - start))
    return tuple(reads)


# --------------------------------------------------------------------------------------------
# Decoding one group's answers


@dataclass(frozen=True, slots=True)
class Reject:
    """A value read correctly that must not be stored as a good reading."""

    sensor_id: int
    channel: str
    reason: str  # not_finite | out_of_range | bad_decimals
    detail: str


@dataclass(frozen=True, slots=True)
class GroupResult:
    sensor_id: tuple[int, ...]
    value: tuple[float, ...]
    quality: tuple[int, ...]
    rejects: tuple[Reject, ...]
    faulted: frozenset[str] | None  # channels the group's status words flag; None: no status


class _Image:
    """The registers (or bits) one group's reads returned, by (fc, address)."""

    def __init__(self, reads: Sequence[ReadRequest], answers: Sequence[Sequence[int]]) -> None:
        if len(reads) != len(answers):
            raise ValueError(f"{len(reads)} reads but {len(answers)} answers")
        self._values: dict[tuple[int, int], int] = {}
        for read, answer in zip(reads, answers, strict=True):
            if len(answer) < read.count:
                raise ValueError(f"read of {read.count} at {read.address} got {len(answer)}")
            for i in range(read.count):
                self._values[(read.fc, read.address + i)] = int(answer[i]) & 0xFFFF

    def registers(self, fc: int, address: int, count: int) -> list[int]:
        return [self._values[(fc, address + i)] for i in range(count)]


def faulted_channels(
    status: Iterable[StatusSpec], image: _Image, channels: frozenset[str]
) -> frozenset[str]:
    faulted: set[str] = set()
    for word in status:
        (register,) = image.registers(word.fc, word.address, 1)
        if word.is_fault(register):
            faulted |= channels if word.applies_to is None else word.applies_to
    return frozenset(faulted)


def decode_group(
    group: GroupPlan,
    answers: Sequence[Sequence[int]],
    *,
    channels: frozenset[str],
    prior_faults: frozenset[str] = frozenset(),
) -> GroupResult:
    """Readings from the answers to `group.reads` (registers as ints, bits as 0/1), in order.

    A channel flagged by a status word gets quality SENSOR_FAULT (its value kept when finite
    and in range, else NaN, and not quarantined: a faulty head's junk is expected). Status
    words of other groups act through `prior_faults`, the last state they reported.
    Otherwise NaN/inf, out-of-range values and impossible decimals registers give a NaN
    reading with quality BAD and a `Reject` for quarantine; everything else is GOOD.
    """
    image = _Image(group.reads, answers)
    faulted = None
    if group.status:
        faulted = faulted_channels(group.status, image, channels)
    active_faults = prior_faults if faulted is None else faulted | prior_faults
    ids: list[int] = []
    values: list[float] = []
    qualities: list[int] = []
    rejects: list[Reject] = []
    for p in group.points:
        count = 1 if p.type is DataType.BOOL else p.type.registers
        raw = registers_to_raw(image.registers(p.fc, p.address, count), p.type, p.word_order)
        decimals = None
        reason = detail = ""
        if p.decimals_address is not None:
            (decimals,) = image.registers(p.fc, p.decimals_address, 1)
            if decimals > MAX_DECIMALS:
                reason, detail = "bad_decimals", f"decimals register reads {decimals}"
        value = math.nan
        if not reason:
            value = engineering_value(raw, p, decimals)
            if not math.isfinite(value):
                reason, detail = "not_finite", f"raw {raw!r} decodes to {value!r}"
            elif not p.range_min <= value <= p.range_max:
                reason = "out_of_range"
                detail = f"{value!r} outside [{p.range_min:g}, {p.range_max:g}]"
        ids.append(p.sensor_id)
        if p.channel in active_faults:
            values.append(math.nan if reason else value)
            qualities.append(int(Quality.SENSOR_FAULT))
        elif reason:
            values.append(math.nan)
            qualities.append(int(Quality.BAD))
            rejects.append(Reject(p.sensor_id, p.channel, reason, detail))
        else:
            values.append(value)
            qualities.append(int(Quality.GOOD))
    return GroupResult(tuple(ids), tuple(values), tuple(qualities), tuple(rejects), faulted)


def failed_group(group: GroupPlan, quality: int) -> GroupResult:
    """Readings for a poll that got no usable answer: NaN with the failure's quality."""
    ids = tuple(p.sensor_id for p in group.points)
    return GroupResult(ids, (math.nan,) * len(ids), (quality,) * len(ids), (), None)


def register_image(
    points: Iterable[tuple[PointSpec, float]],
    status: Iterable[tuple[StatusSpec, bool]] = (),
) -> Mapping[tuple[int, int], int]:
    """Registers (by (fc, address)) that hold the given values and status: the simulator's
    view of a device. Bits points and fault masks are OR-ed into their shared register; a
    status word with fault values holds the first of them while faulted. Values beyond an
    integer type saturate (NaN: 0), as a device's output does; floats carry NaN as it is."""
    image: dict[tuple[int, int], int] = {}
    bit_points: list[tuple[PointSpec, float]] = []
    for p, value in points:
        if p.mask is not None:
            bit_points.append((p, value))
            continue
        decimals = None
        if p.decimals_address is not None:
            decimals = decimals_for(value, p)
            image[(p.fc, p.decimals_address)] = decimals
        for i, register in enumerate(encode_value(value, p, decimals, saturate=True)):
            image[(p.fc, p.address + i)] = register
    for word, fault in status:
        key = (word.fc, word.address)
        if word.fault_mask is not None:
            lowest = word.fault_mask & -word.fault_mask
            image[key] = (image.get(key, 0) & ~word.fault_mask) | (lowest if fault else 0)
        elif fault:
            image[key] = min(word.fault_values)
        else:
            image.setdefault(key, 0)
    for p, value in bit_points:
        key = (p.fc, p.address)
        mask = p.mask or 0
        image[key] = (image.get(key, 0) & ~mask) | (mask if value else 0)
    return image
