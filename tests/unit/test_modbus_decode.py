"""The Modbus decoder and read planner: known vectors, the registry's maps, and properties."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from hazwatch.domain import Quality
from hazwatch.registry.modbus_map import DataType, ModbusDevice, ModbusPoint, WordOrder
from ingest.modbus_decode import (
    DevicePlan,
    PointSpec,
    ReadRequest,
    SensorPoint,
    decode_group,
    encode_value,
    failed_group,
    plan_device,
    plan_reads,
    raw_to_registers,
    register_image,
    registers_to_raw,
)

GOOD = int(Quality.GOOD)


def point_spec(
    dtype: DataType = DataType.FLOAT32,
    order: WordOrder = WordOrder.ABCD,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    mask: int | None = None,
    range_: tuple[float, float] = (-1e300, 1e300),
) -> PointSpec:
    return PointSpec(
        sensor_id=1,
        channel="x",
        fc=3,
        address=0,
        type=dtype,
        word_order=order,
        scale=scale,
        offset=offset,
        decimals_address=None,
        mask=mask,
        group="default",
        range_min=range_[0],
        range_max=range_[1],
    )


def plan(
    device: ModbusDevice, points: dict[str, ModbusPoint], **ranges: tuple[float, float]
) -> DevicePlan:
    sensors = [
        SensorPoint(i + 1, channel, point, *ranges.get(channel, (-1e9, 1e9)))
        for i, (channel, point) in enumerate(points.items())
    ]
    return plan_device("dev", device, sensors)


def answers_for(
    device_plan: DevicePlan, image: dict[tuple[int, int], int]
) -> list[list[list[int]]]:
    return [
        [[image.get((r.fc, r.address + i), 0) for i in range(r.count)] for r in g.reads]
        for g in device_plan.groups
    ]


# --- known vectors ----------------------------------------------------------------------------

FLOAT32_12_5 = [0x4148, 0x0000]  # 12.5 big-endian


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        (WordOrder.ABCD, [0x4148, 0x0000]),
        (WordOrder.CDAB, [0x0000, 0x4148]),
        (WordOrder.BADC, [0x4841, 0x0000]),
        (WordOrder.DCBA, [0x0000, 0x4841]),
    ],
)
def test_float32_in_every_word_order(order: WordOrder, registers: list[int]) -> None:
    assert registers_to_raw(registers, DataType.FLOAT32, order) == 12.5
    assert raw_to_registers(12.5, DataType.FLOAT32, order) == registers


@pytest.mark.parametrize(
    ("dtype", "registers", "value"),
    [
        (DataType.INT16, [0xFFFE], -2),
        (DataType.UINT16, [0xFFFE], 65534),
        (DataType.INT32, [0xFFFF, 0xFFFE], -2),
        (DataType.UINT32, [0x0001, 0x86A0], 100_000),
        (DataType.FLOAT64, [0x4029, 0x0000, 0x0000, 0x0000], 12.5),
    ],
)
def test_known_values_big_endian(dtype: DataType, registers: list[int], value: float) -> None:
    assert registers_to_raw(registers, dtype, WordOrder.ABCD) == value


def test_64_bit_word_orders_swap_all_four_words() -> None:
    big = [0x0102, 0x0304, 0x0506, 0x0708]
    value = struct.unpack(">d", bytes(range(1, 9)))[0]
    assert raw_to_registers(value, DataType.FLOAT64, WordOrder.CDAB) == big[::-1]
    assert raw_to_registers(value, DataType.FLOAT64, WordOrder.BADC) == [
        0x0201, 0x0403, 0x0605, 0x0807,
    ]  # fmt: skip
    assert raw_to_registers(value, DataType.FLOAT64, WordOrder.DCBA) == [
        0x0807, 0x0605, 0x0403, 0x0201,
    ]  # fmt: skip


@given(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
def test_abcd_and_cdab_agree_with_pymodbus(registers: list[int]) -> None:
    """pymodbus' own converter is an independent oracle for big and word-swapped order."""
    convert = ModbusClientMixin.convert_from_registers
    dt = ModbusClientMixin.DATATYPE
    for dtype, theirs, n in (
        (DataType.INT32, dt.INT32, 2),
        (DataType.UINT32, dt.UINT32, 2),
        (DataType.FLOAT32, dt.FLOAT32, 2),
        (DataType.FLOAT64, dt.FLOAT64, 4),
    ):
        for order, word_order in ((WordOrder.ABCD, "big"), (WordOrder.CDAB, "little")):
            ours = registers_to_raw(registers[:n], dtype, order)
            expected = float(convert(registers[:n], theirs, word_order=word_order))  # type: ignore[arg-type]
            assert ours == expected or (math.isnan(ours) and math.isnan(expected))


def test_bits_and_scale_offset() -> None:
    alarm = point_spec(DataType.BITS, mask=0x0080)
    assert registers_to_raw([0x00C0], DataType.BITS, WordOrder.ABCD) == 0xC0
    assert encode_value(1.0, alarm) == [0x0080]
    lel = point_spec(DataType.UINT16, scale=0.1)
    assert encode_value(12.3, lel) == [123]
    offset = point_spec(DataType.INT16, scale=0.5, offset=-20)
    assert encode_value(-10.0, offset) == [20]


# --- the planner ------------------------------------------------------------------------------

MIDAS = ModbusDevice(
    host="h", unit=1, addressing="base1", word_order=WordOrder.CDAB,
    status=({"address": 40001, "fault_mask": 0x0030, "applies_to": ("co",)},),  # type: ignore[arg-type]
)  # fmt: skip
MIDAS_POINTS = {
    "co": ModbusPoint(address=40003, type=DataType.FLOAT32),
    "low_alarm": ModbusPoint(address=40001, type=DataType.BITS, mask=0x0040),
    "high_alarm": ModbusPoint(address=40001, type=DataType.BITS, mask=0x0080),
    "fault": ModbusPoint(address=40006, type=DataType.UINT16),
}


def test_midas_map_is_one_read_of_six_registers() -> None:
    p = plan(MIDAS, MIDAS_POINTS)
    assert [g.reads for g in p.groups] == [(ReadRequest(3, 0, 6),)]


def test_decimals_register_joins_within_the_gap_and_splits_without_it() -> None:
    points = {
        "pressure": ModbusPoint(address=0, type=DataType.INT16, decimals_address=10),
        "flow": ModbusPoint(address=2, type=DataType.UINT32, scale=0.1),
    }
    joined = plan(ModbusDevice(host="h"), points)
    assert joined.groups[0].reads == (ReadRequest(3, 0, 11),)
    split = plan(ModbusDevice(host="h", read_gap=0), points)
    assert split.groups[0].reads == (
        ReadRequest(3, 0, 1),
        ReadRequest(3, 2, 2),
        ReadRequest(3, 10, 1),
    )


def test_reads_respect_the_125_register_and_2000_bit_limits() -> None:
    spans = [ReadRequest(3, a, 2) for a in range(0, 300, 2)]
    reads = plan_reads(spans, read_gap=8)
    assert [r.count for r in reads] == [124, 124, 52]
    assert all(r.count <= 125 for r in reads)
    bits = plan_reads([ReadRequest(1, a, 1) for a in range(0, 4000, 100)], read_gap=8)
    assert [(r.address, r.count) for r in bits] == [(0, 1901), (2000, 1901)]


def test_groups_and_function_codes_are_read_separately() -> None:
    device = ModbusDevice(host="h", poll_groups={"fast": 1.0, "slow": 5.0})
    points = {
        "a": ModbusPoint(address=0, group="fast"),
        "b": ModbusPoint(address=1, group="slow"),
        "c": ModbusPoint(fc=4, address=0, type=DataType.FLOAT32, group="fast"),
        "d": ModbusPoint(fc=2, address=7, type=DataType.BOOL, group="fast"),
    }
    p = plan(device, points)
    fast, slow = p.groups
    assert fast.reads == (ReadRequest(2, 7, 1), ReadRequest(3, 0, 1), ReadRequest(4, 0, 2))
    assert slow.reads == (ReadRequest(3, 1, 1),)


# --- decoding a group -------------------------------------------------------------------------


def test_midas_fault_bit_marks_co_and_alarm_bits_become_channels() -> None:
    p = plan(MIDAS, MIDAS_POINTS, co=(0, 1000))
    co = 12.5
    regs = [0x00C0 | 0x0010, 0, *raw_to_registers(co, DataType.FLOAT32, WordOrder.CDAB), 0, 7]
    result = decode_group(p.groups[0], [regs], channels=p.channels)
    by_id = dict(zip(result.sensor_id, zip(result.value, result.quality, strict=True), strict=True))
    assert by_id[1] == (12.5, int(Quality.SENSOR_FAULT))  # co: value kept, quality bad
    assert by_id[2] == (1.0, GOOD)  # low alarm
    assert by_id[3] == (1.0, GOOD)  # high alarm
    assert by_id[4] == (7.0, GOOD)  # fault number
    assert result.faulted == frozenset({"co"})


def test_ya_k300_status_value_faults_every_channel() -> None:
    device = ModbusDevice(host="h", status=({"address": 1, "fault_values": (2,)},))  # type: ignore[arg-type]
    points = {
        "lel": ModbusPoint(address=0, scale=0.1),
        "alarm": ModbusPoint(address=2),
    }
    p = plan(device, points, lel=(0, 100), alarm=(0, 2))
    ok = decode_group(p.groups[0], [[123, 0, 1]], channels=p.channels)
    assert ok.value == pytest.approx((12.3, 1.0)) and ok.quality == (GOOD, GOOD)
    fault = decode_group(p.groups[0], [[123, 2, 1]], channels=p.channels)
    assert fault.quality == (int(Quality.SENSOR_FAULT),) * 2


def test_fault_from_another_group_applies_through_prior_faults() -> None:
    p = plan(ModbusDevice(host="h"), {"a": ModbusPoint(address=0)})
    result = decode_group(p.groups[0], [[5]], channels=p.channels, prior_faults=frozenset({"a"}))
    assert result.quality == (int(Quality.SENSOR_FAULT),)


def test_nan_out_of_range_and_bad_decimals_are_rejected_not_stored() -> None:
    points = {
        "f": ModbusPoint(address=0, type=DataType.FLOAT32),
        "r": ModbusPoint(address=2, type=DataType.UINT16),
        "d": ModbusPoint(address=3, type=DataType.INT16, decimals_address=4),
    }
    p = plan(ModbusDevice(host="h"), points, f=(0, 10), r=(0, 100), d=(0, 100))
    nan = raw_to_registers(math.nan, DataType.FLOAT32, WordOrder.ABCD)
    result = decode_group(p.groups[0], [[*nan, 101, 5, 99]], channels=p.channels)
    assert all(math.isnan(v) for v in result.value)
    assert result.quality == (int(Quality.BAD),) * 3
    assert sorted(r.reason for r in result.rejects) == [
        "bad_decimals",
        "not_finite",
        "out_of_range",
    ]
    good = decode_group(p.groups[0], [[0, 0, 100, 1234, 2]], channels=p.channels)
    assert good.value == pytest.approx((0.0, 100.0, 12.34)) and good.rejects == ()


def test_failed_group_gives_nan_with_the_failure_quality() -> None:
    p = plan(MIDAS, MIDAS_POINTS)
    result = failed_group(p.groups[0], int(Quality.COMM_TIMEOUT))
    assert len(result.sensor_id) == 4
    assert all(math.isnan(v) for v in result.value)
    assert set(result.quality) == {int(Quality.COMM_TIMEOUT)}


# --- properties -------------------------------------------------------------------------------

INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[DataType, WordOrder, float]:
    dtype = draw(st.sampled_from(list(_VALUE_TYPES)))
    order = draw(st.sampled_from(list(WordOrder)))
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        return dtype, order, float(draw(st.integers(low, high)))
    width = 32 if dtype is DataType.FLOAT32 else 64
    return dtype, order, draw(st.floats(allow_nan=False, allow_infinity=False, width=width))


_VALUE_TYPES = (*INT_RANGES, DataType.FLOAT32, DataType.FLOAT64)


@given(typed_values())
def test_encode_decode_round_trip(case: tuple[DataType, WordOrder, float]) -> None:
    dtype, order, value = case
    registers = raw_to_registers(value, dtype, order)
    assert len(registers) == dtype.registers
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert registers_to_raw(registers, dtype, order) == value


@given(
    st.sampled_from(_VALUE_TYPES),
    st.sampled_from(list(WordOrder)),
    st.floats(-1e6, 1e6),
    st.floats(0.001, 1000),
    st.floats(-100, 100),
)
def test_scaled_round_trip_within_one_step(
    dtype: DataType, order: WordOrder, value: float, scale: float, offset: float
) -> None:
    point = point_spec(dtype, order, scale=scale, offset=offset)
    raw = (value - offset) / scale
    if dtype in INT_RANGES and not INT_RANGES[dtype][0] <= round(raw) <= INT_RANGES[dtype][1]:
        return
    registers = encode_value(value, point)
    decoded = registers_to_raw(registers, dtype, order) * scale + offset
    # one raw step for integers; float rounding of the raw value (and of the arithmetic)
    epsilon = {DataType.FLOAT32: 2.0**-23, DataType.FLOAT64: 2.0**-52}.get(dtype, 0.0)
    step = scale if dtype in INT_RANGES else abs(raw) * scale * epsilon
    step += 1e-12 * (abs(value) + abs(offset) + 1)
    assert abs(decoded - value) <= step


DEVICE_WITH_EVERYTHING = ModbusDevice(
    host="h", word_order=WordOrder.BADC,
    status=({"address": 20, "fault_mask": 0x0003, "applies_to": ("f32",)},),  # type: ignore[arg-type]
)  # fmt: skip
EVERYTHING = {
    "i16": ModbusPoint(address=0, type=DataType.INT16, decimals_address=1),
    "u16": ModbusPoint(address=2, type=DataType.UINT16, scale=0.1),
    "i32": ModbusPoint(address=3, type=DataType.INT32, word_order=WordOrder.CDAB),
    "u32": ModbusPoint(address=5, type=DataType.UINT32, offset=-10),
    "f32": ModbusPoint(address=7, type=DataType.FLOAT32),
    "f64": ModbusPoint(address=9, type=DataType.FLOAT64, word_order=WordOrder.DCBA),
    "bit": ModbusPoint(address=20, type=DataType.BITS, mask=0x0100),
}
EVERYTHING_PLAN = plan(DEVICE_WITH_EVERYTHING, EVERYTHING, **dict.fromkeys(EVERYTHING, (-1e6, 1e6)))


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFF), min_size=21, max_size=21))
def test_decoder_never_raises_and_never_passes_bad_values_as_good(registers: list[int]) -> None:
    group = EVERYTHING_PLAN.groups[0]
    assert group.reads == (ReadRequest(3, 0, 21),)
    result = decode_group(group, [registers], channels=EVERYTHING_PLAN.channels)
    assert len(result.sensor_id) == len(EVERYTHING)
    for value, quality in zip(result.value, result.quality, strict=True):
        if quality == GOOD:
            assert math.isfinite(value) and -1e6 <= value <= 1e6
        else:
            assert quality in (int(Quality.BAD), int(Quality.SENSOR_FAULT))
    assert len(result.rejects) == sum(q == int(Quality.BAD) for q in result.quality)


@given(
    st.integers(-3000, 3000),
    st.integers(0, 60000),
    st.integers(-1_000_000, 1_000_000),  # within the sensors' range
    st.floats(-1e6, 1e6, width=32),
    st.booleans(),
    st.booleans(),
)
def test_register_image_decodes_back_to_its_values(
    i16: int, u16: int, i32: int, f32: float, bit: bool, fault: bool
) -> None:
    """The simulator's register image and the collector's decoder agree."""
    group = EVERYTHING_PLAN.groups[0]
    by_channel = {p.channel: p for p in group.points}
    values = {
        "i16": i16 / 100, "u16": u16 / 10, "i32": float(i32), "u32": 12345.0,
        "f32": f32, "f64": 1.0 / 3.0, "bit": float(bit),
    }  # fmt: skip
    image = register_image(
        [(by_channel[c], v) for c, v in values.items()], [(group.status[0], fault)]
    )
    (answers,) = answers_for(EVERYTHING_PLAN, dict(image))
    result = decode_group(group, answers, channels=EVERYTHING_PLAN.channels)
    decoded = {by_id.channel: v for by_id, v in zip(group.points, result.value, strict=True)}
    for channel, value in values.items():
        assert decoded[channel] == pytest.approx(value, rel=1e-9, abs=0.051)
    f32_quality = result.quality[list(by_channel).index("f32")]
    assert f32_quality == (int(Quality.SENSOR_FAULT) if fault else GOOD)
    assert result.faulted == (frozenset({"f32"}) if fault else frozenset())
