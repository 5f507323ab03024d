"""The Modbus collector's Prometheus metrics, registered in the registry the caller passes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ModbusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "hazwatch_modbus_polls",
            "Scheduled Modbus polls by device and result (ok, timeout, exception, junk, "
            "disconnected, refused, connect_timeout, skipped)",
            ["device", "result"],
            registry=registry,
        )
        self.missed = Counter(
            "hazwatch_modbus_missed_polls",
            "Scheduled polls that could not start within their period (line overloaded)",
            ["device"],
            registry=registry,
        )
        self.rejected = Counter(
            "hazwatch_modbus_rejected_values",
            "Values read but sent to quarantine (not_finite, out_of_range, bad_decimals)",
            ["device", "reason"],
            registry=registry,
        )
        self.up = Gauge(
            "hazwatch_modbus_device_up",
            "1 when the device's last poll succeeded, 0 when it failed",
            ["device"],
            registry=registry,
        )
        self.consecutive_failures = Gauge(
            "hazwatch_modbus_consecutive_failures",
            "Failed polls in a row per device",
            ["device"],
            registry=registry,
        )
        self.connects = Counter(
            "hazwatch_modbus_connects",
            "Connection attempts per line (host:port) and result",
            ["line", "result"],
            registry=registry,
        )
        self.lateness = Histogram(
            "hazwatch_modbus_poll_lateness_seconds",
            "How late a poll started after its scheduled time",
            ["line"],
            buckets=LATENESS_BUCKETS_S,
            registry=registry,
        )
