"""The Modbus part of the registry: how to reach a device and where each point lives.

Conventions follow ../shared/DOMAIN.md: function codes 1-4, base-0 protocol addresses or base-1
PLC addresses (including the Modicon 0xxxx/1xxxx/3xxxx/4xxxx notation), 16/32/64-bit integers
and floats in any word order, scale and offset or a decimal-places register, and status words
whose bits mean "detector fault" or become channels of their own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_REGISTERS_PER_READ = 125  # Modbus limit for FC 3/4
MAX_BITS_PER_READ = 2000  # Modbus limit for FC 1/2


class WordOrder(StrEnum):
    """Byte layout of a multi-register value; A is the most significant byte.

    ABCD big-endian (high word first), CDAB word-swapped (Honeywell Midas), BADC byte-swapped
    within each word, DCBA little-endian. For 64-bit values the same swap applies to all four
    words: CDAB lists the words low to high, each word big-endian.
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"  # a coil or discrete input (FC 1/2)
    BITS = "bits"  # masked bits of a 16-bit register: 1 when any bit of the mask is set

    @property
    def registers(self) -> int:
        return {"int32": 2, "uint32": 2, "float32": 2, "float64": 4}.get(self.value, 1)


FunctionCode = Literal[1, 2, 3, 4]
Addressing = Literal["base0", "base1"]

# Modicon notation: the leading digit names the table, the rest is the 1-based address.
_MODICON_PREFIX = {1: 0, 2: 1, 3: 4, 4: 3}  # function code -> leading digit


def protocol_address(address: int, fc: int, addressing: Addressing) -> int:
    """The 0-based address on the wire for an address as written in the registry.

    With base-1 addressing, 5- and 6-digit Modicon addresses (40001, 400001) have their table
    digit stripped first; the digit must match the function code.
    """
    if addressing == "base0":
        return address
    if address >= 10_000:
        digits = 6 if address >= 100_000 else 5
        table, offset = divmod(address, 10 ** (digits - 1))
        if table != _MODICON_PREFIX[fc]:
            raise ValueError(
                f"address {address} is in the {table}xxxx table, which is not read by FC {fc}"
                f" (expected {_MODICON_PREFIX[fc]}xxxx)"
            )
        address = offset
    if address < 1:
        raise ValueError(f"base-1 address {address} must be at least 1")
    return address - 1


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModbusPoint(_Spec):
    """Where one sensor's value lives and how to turn registers into engineering units:
    value = raw * scale + offset, or raw / 10**decimals when a decimals register is given."""

    fc: FunctionCode = 3
    address: int = Field(ge=0, le=465_536)
    type: DataType = DataType.UINT16
    word_order: WordOrder | None = None  # default: the device's word order
    scale: float = 1.0
    offset: float = 0.0
    decimals_address: int | None = Field(None, ge=0, le=465_536)
    mask: int | None = Field(None, ge=1, le=0xFFFF)
    group: str = "default"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fc in (1, 2) and self.type is not DataType.BOOL:
            raise ValueError(f"FC {self.fc} reads bits: type must be bool, not {self.type}")
        if self.fc in (3, 4) and self.type is DataType.BOOL:
            raise ValueError("type bool needs FC 1 or 2; use type bits with a mask for registers")
        if (self.type is DataType.BITS) != (self.mask is not None):
            raise ValueError("type bits needs a mask, and a mask needs type bits")
        if self.decimals_address is not None and self.fc not in (3, 4):
            raise ValueError("a decimals register needs FC 3 or 4")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class StatusWord(_Spec):
    """A status register polled with the device's points. Fault bits (or fault values, for
    devices that report a state number) mark the readings of `applies_to` (default: every
    point of the device) as a sensor fault instead of storing their values as good."""

    fc: Literal[3, 4] = 3
    address: int = Field(ge=0, le=465_536)
    fault_mask: int | None = Field(None, ge=1, le=0xFFFF)
    fault_values: tuple[int, ...] | None = None
    applies_to: tuple[str, ...] | None = None
    group: str = "default"

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.fault_mask is None and not self.fault_values:
            raise ValueError("a status word needs fault_mask or fault_values")
        return self


class ModbusDevice(_Spec):
    """How to reach a device: one unit id behind a host and port (a gateway may serve many)."""

    host: str
    port: int = Field(502, ge=1, le=65_535)
    unit: int = Field(1, ge=0, le=255)
    framer: Literal["socket", "rtu"] = "socket"  # rtu: RTU frames over TCP
    addressing: Addressing = "base0"
    word_order: WordOrder = WordOrder.ABCD
    timeout_s: float = Field(0.5, gt=0, le=30)
    # Unmapped registers a read may span to join two points into one request (bits: 16x as
    # many). 0 for devices that answer "illegal address" for registers they do not implement.
    read_gap: int = Field(8, ge=0, le=120)
    poll_groups: dict[str, float] = Field(default_factory=lambda: {"default": 1.0})
    status: tuple[StatusWord, ...] = ()

    @model_validator(mode="after")
    def _groups(self) -> Self:
        for name, period in self.poll_groups.items():
            if period <= 0:
                raise ValueError(f"poll group {name!r} needs a positive period, not {period}")
        for word in self.status:
            if word.group not in self.poll_groups:
                raise ValueError(
                    f"status word at {word.address} names unknown group {word.group!r}"
                )
        return self
