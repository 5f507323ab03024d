"""The registry file's schema: sites, assets, devices and sensors (docs/registry.md).

These models check each entry on its own (types, ranges, units, register maps). Checks that
need the whole file (duplicate keys, references between entries) are in `registry.checks`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hazwatch.catalog import CATALOGUE, UNITS, KindSpec
from hazwatch.domain import Tier
from hazwatch.registry.modbus_map import ModbusDevice, ModbusPoint
from hazwatch.rulespec import RuleSpec, TierField, VoteRule

KEY = r"^[a-z0-9][a-z0-9_-]*$"
CHANNEL = r"^[a-z0-9][a-z0-9_]*$"


class AssetKind(StrEnum):
    GAS_HOLDER = "gas_holder"
    PIPELINE_SEGMENT = "pipeline_segment"
    PRESSURE_STATION = "pressure_station"
    HAZARD_SOURCE = "hazard_source"
    TANK = "tank"
    LIGHTNING_STATION = "lightning_station"
    BUILDING = "building"
    OTHER = "other"


def risk_tier_from_r(r_value: float) -> Tier:
    """GB 18218-2018 grading: level I (red) at R >= 100, II 50-100, III 10-50, IV < 10."""
    if r_value >= 100:
        return Tier.RED
    if r_value >= 50:
        return Tier.ORANGE
    if r_value >= 10:
        return Tier.YELLOW
    return Tier.BLUE


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _SensorBase(_Entry):
    channel: str = Field(pattern=CHANNEL, max_length=64)
    kind: str
    name: str | None = None
    unit: str | None = None  # default: the kind's unit
    range: tuple[float, float] | None = None  # physical range; default: the kind's
    period_s: float | None = Field(None, gt=0)  # expected period; default: the kind's
    params: dict[str, float] = Field(default_factory=dict)
    rules: RuleSpec | None = None

    @property
    def spec(self) -> KindSpec:
        return CATALOGUE[self.kind]

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        if self.kind not in CATALOGUE:
            known = ", ".join(sorted(CATALOGUE))
            raise ValueError(f"unknown sensor kind {self.kind!r}; known kinds: {known}")
        spec = CATALOGUE[self.kind]
        if self.unit is not None:
            if self.unit not in UNITS:
                raise ValueError(f"unknown unit {self.unit!r}; known units: {sorted(UNITS)}")
            if self.unit not in spec.units:
                raise ValueError(
                    f"unit {self.unit!r} does not fit kind {self.kind} "
                    f"(expected {' or '.join(sorted(spec.units))})"
                )
        if self.range is not None and self.range[0] >= self.range[1]:
            raise ValueError(f"range min {self.range[0]} must be below max {self.range[1]}")
        missing = [p for p in spec.params if p not in self.params]
        if missing:
            raise ValueError(f"kind {self.kind} needs params: {', '.join(missing)}")
        try:
            self.effective_rules()
        except ValueError as exc:
            raise ValueError(f"the rules of this sensor are inconsistent: {exc}") from None
        if spec.needs_plant_limits and (
            self.rules is None or (self.rules.high is None and self.rules.low is None)
        ):
            raise ValueError(
                f"kind {self.kind} has no default limits: give rules.high or rules.low "
                "from the plant's DCS/SIS set points"
            )
        self.effective_rules().check_effective()
        return self

    @property
    def effective_unit(self) -> str:
        return self.unit or self.spec.unit

    @property
    def effective_range(self) -> tuple[float, float]:
        return self.range or (self.spec.range_min, self.spec.range_max)

    @property
    def effective_period_s(self) -> float | None:
        return self.period_s if self.period_s is not None else self.spec.period_s

    def effective_rules(self) -> RuleSpec:
        return self.spec.default_rules(self.params).overlay(self.rules)


class SensorEntry(_SensorBase):
    """A measured point of a device; its key is '<device>/<channel>'."""

    asset: str | None = Field(None, pattern=KEY)  # default: the device's asset
    modbus: ModbusPoint | None = None

    @model_validator(mode="after")
    def _not_derived(self) -> Self:
        if self.spec.derived_only:
            raise ValueError(f"kind {self.kind} is computed: declare it under the asset's derived")
        return self


class DeriveSpec(_Entry):
    """How a derived signal is computed from measured ones, before the alarm engine.

    rate: d(input)/dt in units per minute, times `scale`, smoothed over `smooth_s`
          (piston speed from holder level: scale = stroke in metres / 100).
    imbalance: (first - second) / first * 100, the flow imbalance of a segment in %.
    """

    op: Literal["rate", "imbalance"]
    inputs: list[str] = Field(min_length=1, max_length=2)
    scale: float = 1.0
    smooth_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _arity(self) -> Self:
        wanted = {"rate": 1, "imbalance": 2}[self.op]
        if len(self.inputs) != wanted:
            raise ValueError(f"op {self.op} takes {wanted} input(s), got {len(self.inputs)}")
        return self


class DerivedEntry(_SensorBase):
    """A computed signal of an asset; its key is '<asset>/<channel>'."""

    derive: DeriveSpec


class AssetEntry(_Entry):
    key: str = Field(pattern=KEY, max_length=64)
    kind: AssetKind
    name: str
    static_risk: TierField | None = None  # from an assessment
    r_value: float | None = Field(None, ge=0)  # GB 18218 R; grades the static risk if given
    params: dict[str, float] = Field(default_factory=dict)
    derived: tuple[DerivedEntry, ...] = ()
    votes: tuple[VoteRule, ...] = ()

    @property
    def effective_static_risk(self) -> Tier:
        if self.static_risk is not None:
            return self.static_risk
        if self.r_value is not None:
            return risk_tier_from_r(self.r_value)
        return Tier.NORMAL


class DeviceEntry(_Entry):
    key: str = Field(pattern=KEY, max_length=64)
    name: str | None = None
    asset: str | None = Field(None, pattern=KEY)
    protocol: Literal["mqtt", "modbus"]
    modbus: ModbusDevice | None = None
    sensors: list[SensorEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _protocol_fits(self) -> Self:
        if self.protocol == "modbus":
            if self.modbus is None:
                raise ValueError("a modbus device needs a modbus section (host, port, unit)")
            unmapped = [s.channel for s in self.sensors if s.modbus is None]
            if unmapped:
                raise ValueError(f"modbus sensors without a register: {', '.join(unmapped)}")
        else:
            if self.modbus is not None:
                raise ValueError("an mqtt device must not have a modbus section")
            mapped = [s.channel for s in self.sensors if s.modbus is not None]
            if mapped:
                raise ValueError(f"mqtt device sensors with a register map: {', '.join(mapped)}")
        return self


class SiteEntry(_Entry):
    key: str = Field(pattern=KEY, max_length=64)
    name: str
    timezone: str = "Asia/Shanghai"
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    assets: tuple[AssetEntry, ...] = ()
    devices: tuple[DeviceEntry, ...] = ()


class RegistryFile(_Entry):
    version: Literal[1] = 1
    sites: list[SiteEntry] = Field(min_length=1)
