"""A `RegistrySnapshot` straight from a registry file, without a database.

For the simulators (which serve what the file describes), benchmarks and tests. Ids are numbered
in file order from 1; they match the database's only for a file loaded into an empty database,
so nothing that stores readings should use this view. Derived signals are left out.
"""

from __future__ import annotations

from hazwatch.registry.model import RegistryFile
from hazwatch.registry.snapshot import AssetInfo, DeviceInfo, RegistrySnapshot, SensorInfo, SiteInfo
from hazwatch.rulespec import RuleSpec


def snapshot_from_file(registry: RegistryFile) -> RegistrySnapshot:
    sites: list[SiteInfo] = []
    assets: list[AssetInfo] = []
    devices: list[DeviceInfo] = []
    sensors: list[SensorInfo] = []
    asset_ids: dict[str, int] = {}
    for site_id, site in enumerate(registry.sites, start=1):
        sites.append(SiteInfo(site_id, site.key, site.name))
        for asset in site.assets:
            asset_ids[asset.key] = len(asset_ids) + 1
            assets.append(
                AssetInfo(
                    asset_id=asset_ids[asset.key],
                    key=asset.key,
                    site_key=site.key,
                    kind=asset.kind.value,
                    name=asset.name,
                    static_risk=asset.effective_static_risk,
                    votes=asset.votes,
                )
            )
        for device in site.devices:
            own: list[SensorInfo] = []
            for entry in device.sensors:
                asset_key = entry.asset or device.asset
                assert asset_key is not None  # checked by registry.checks
                range_min, range_max = entry.effective_range
                own.append(
                    SensorInfo(
                        sensor_id=len(sensors) + len(own) + 1,
                        key=f"{device.key}/{entry.channel}",
                        site_id=site_id,
                        site_key=site.key,
                        asset_id=asset_ids[asset_key],
                        asset_key=asset_key,
                        device_key=device.key,
                        channel=entry.channel,
                        kind=entry.kind,
                        unit=entry.effective_unit,
                        name=entry.name or f"{device.key}/{entry.channel}",
                        range_min=range_min,
                        range_max=range_max,
                        period_s=entry.effective_period_s,
                        params=entry.params,
                        overrides=entry.rules or RuleSpec(),
                        modbus=entry.modbus,
                    )
                )
            sensors.extend(own)
            devices.append(
                DeviceInfo(
                    device_id=len(devices) + 1,
                    key=device.key,
                    site_key=site.key,
                    protocol=device.protocol,
                    modbus=device.modbus,
                    sensors=tuple(own),
                )
            )
    return RegistrySnapshot.build(sites, assets, devices, sensors)
