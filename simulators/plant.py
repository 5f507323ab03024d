"""The registry as the simulator sees it: every measured sensor and device, flattened.

A sensor is keyed `<device>/<channel>` like everywhere else in HazWatch. Derived sensors are
not simulated (the platform computes them); their inputs are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hazwatch.registry.model import AssetEntry, AssetKind, RegistryFile
from hazwatch.rulespec import RuleSpec

# Kinds a gas detector measures; their devices may also carry alarm outputs and a fault number.
GAS_KINDS = frozenset({"co", "co_piston_top", "combustible_gas", "h2s", "ch4_manhole", "o2"})
HOLDER_KINDS = frozenset(
    {"holder_level", "piston_speed", "piston_tilt", "holder_pressure", "co_piston_top"}
)
PIPE_PRESSURE_KINDS = frozenset({"pipeline_pressure", "pipeline_pressure_kpa"})
LIGHTNING_KINDS = frozenset({"electric_field", "lightning_distance"})
# A detector's own outputs: alarm relays and its fault number, computed from its gas reading.
OUTPUT_KINDS = frozenset({"detector_alarm", "fault_code"})
FLOW_CHANNELS = ("flow_in", "flow_out")  # the channels that make a device a chain station


@dataclass(frozen=True, slots=True)
class SensorInfo:
    key: str
    site: str
    device: str
    channel: str
    kind: str
    unit: str
    range_min: float
    range_max: float
    period_s: float | None  # None: an event stream (published only when something happens)
    asset: str | None
    params: Mapping[str, float]
    rules: RuleSpec  # effective: the kind's defaults with the registry's overrides

    @property
    def span(self) -> float:
        return self.range_max - self.range_min


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    key: str
    site: str
    asset: str | None
    protocol: str  # "mqtt" or "modbus"
    sensors: tuple[SensorInfo, ...]

    def channel(self, name: str) -> SensorInfo | None:
        return next((s for s in self.sensors if s.channel == name), None)


@dataclass(frozen=True, slots=True)
class DerivedInfo:
    """A signal the platform computes from measured ones (not simulated, but scenarios may
    promise its alarms)."""

    key: str
    kind: str
    op: str  # "rate" or "imbalance"
    inputs: tuple[str, ...]
    scale: float
    rules: RuleSpec


@dataclass(frozen=True, slots=True)
class AssetInfo:
    key: str
    site: str
    kind: AssetKind
    params: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Plant:
    """Sites, assets, devices and sensors in registry order (the order is part of determinism:
    models are built and stepped in it)."""

    sites: tuple[str, ...]
    timezones: Mapping[str, str]
    assets: Mapping[str, AssetInfo]
    devices: Mapping[str, DeviceInfo]
    sensors: Mapping[str, SensorInfo]
    derived: Mapping[str, DerivedInfo]

    @property
    def derived_keys(self) -> frozenset[str]:
        return frozenset(self.derived)

    @classmethod
    def from_registry(cls, registry: RegistryFile) -> Plant:
        assets: dict[str, AssetInfo] = {}
        devices: dict[str, DeviceInfo] = {}
        sensors: dict[str, SensorInfo] = {}
        derived: dict[str, DerivedInfo] = {}
        for site in registry.sites:
            for asset in site.assets:
                assets[asset.key] = _asset(site.key, asset)
                for x in asset.derived:
                    key = f"{asset.key}/{x.channel}"
                    derived[key] = DerivedInfo(
                        key=key,
                        kind=x.kind,
                        op=x.derive.op,
                        inputs=tuple(x.derive.inputs),
                        scale=x.derive.scale,
                        rules=x.effective_rules(),
                    )
            for device in site.devices:
                infos = []
                for s in device.sensors:
                    lo, hi = s.effective_range
                    info = SensorInfo(
                        key=f"{device.key}/{s.channel}",
                        site=site.key,
                        device=device.key,
                        channel=s.channel,
                        kind=s.kind,
                        unit=s.effective_unit,
                        range_min=lo,
                        range_max=hi,
                        period_s=s.effective_period_s,
                        asset=s.asset or device.asset,
                        params=dict(s.params),
                        rules=s.effective_rules(),
                    )
                    infos.append(info)
                    sensors[info.key] = info
                devices[device.key] = DeviceInfo(
                    key=device.key,
                    site=site.key,
                    asset=device.asset,
                    protocol=device.protocol,
                    sensors=tuple(infos),
                )
        return cls(
            sites=tuple(s.key for s in registry.sites),
            timezones={s.key: s.timezone for s in registry.sites},
            assets=assets,
            devices=devices,
            sensors=sensors,
            derived=derived,
        )

    def devices_of_asset(self, asset: str) -> list[DeviceInfo]:
        return [d for d in self.devices.values() if any(s.asset == asset for s in d.sensors)]

    def chain(self, asset: str) -> list[DeviceInfo]:
        """The pressure stations along a pipeline asset, upstream first: its devices that meter
        `flow_in` and/or `flow_out`, in registry order."""
        return [
            d
            for d in self.devices_of_asset(asset)
            if any(s.channel in FLOW_CHANNELS and s.asset == asset for s in d.sensors)
        ]

    def sensors_of_asset(self, asset: str) -> list[SensorInfo]:
        return [s for s in self.sensors.values() if s.asset == asset]


def _asset(site: str, asset: AssetEntry) -> AssetInfo:
    return AssetInfo(key=asset.key, site=site, kind=asset.kind, params=dict(asset.params))
