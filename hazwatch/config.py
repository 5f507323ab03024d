"""Typed settings, read from the environment (prefix HAZWATCH_) and an optional .env file.

Settings are built once in an entry point (`Settings()` in the CLI or the app's lifespan) and
passed down; nothing here runs at import time. Nested groups use a double underscore:
HAZWATCH_DATABASE__URL, HAZWATCH_MQTT__PORT, HAZWATCH_INGEST__BATCH_MAX_ROWS. Every field is
listed in docs/configuration.md (a test checks that).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Group):
    url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/hazwatch",
        description="libpq URL of the TimescaleDB database",
    )
    pool_min: int = Field(1, ge=0, description="connections kept open in each pool")
    pool_max: int = Field(8, ge=1, description="largest pool size")
    command_timeout_s: float = Field(
        5.0, gt=0, description="longest any single database call may take before it fails"
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="longest a connection attempt may take")


class MqttSettings(_Group):
    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    username: str | None = Field(None, description="broker user name, if the broker wants one")
    password: SecretStr | None = Field(None, description="broker password")
    tls_ca_file: str | None = Field(None, description="CA bundle; set to connect over TLS")
    protocol: int = Field(5, description="MQTT protocol: 4 (3.1.1) or 5")
    topic_root: str = Field("hazwatch/v1", description="topic prefix of the MQTT contract")
    client_id: str = Field(
        "hazwatch-ingest", description="fixed client id, so the broker keeps the session"
    )
    sites: tuple[str, ...] = Field(
        (), description="partition: the site keys this worker subscribes to (empty: all)"
    )
    session_expiry_s: int = Field(
        86_400, ge=0, description="how long the broker keeps the session while we are away"
    )
    keepalive_s: int = Field(30, ge=5, description="MQTT keepalive")
    receive_maximum: int = Field(
        65_535, ge=1, le=65_535, description="unacknowledged QoS 1 messages the broker may send"
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest reconnect delay")
    seq_gap_grace_s: float = Field(
        30.0,
        gt=0,
        description="a device's message numbers still missing this long after a jump are "
        "reported as lost (quarantine reason seq_gap)",
    )


class IngestSettings(_Group):
    batch_max_rows: int = Field(50_000, ge=1, description="flush a batch at this many readings")
    batch_max_age_ms: int = Field(
        20,
        ge=1,
        description="flush a batch at this age (alarm latency: docs/performance.md)",
    )
    buffer_max_rows: int = Field(
        500_000, ge=1, description="readings held before collectors are pushed back"
    )
    max_payload_bytes: int = Field(
        262_144, ge=1, description="larger MQTT payloads go to quarantine"
    )
    max_future_s: float = Field(
        300.0, ge=0, description="readings further ahead of the clock go to quarantine"
    )
    raw_retention_days: float = Field(
        365.0, gt=0, description="keep raw readings this long; older readings are refused"
    )
    rollup_retention_days: float = Field(
        3650.0, gt=0, description="keep the one-minute rollup this long"
    )
    db_retry_max_s: float = Field(
        10.0, gt=0, description="longest wait between attempts while the database is down"
    )
    quarantine_max_records: int = Field(
        10_000, ge=1, description="quarantine records held while the database is down"
    )
    quarantine_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="bytes of quarantine records held likewise"
    )
    registry_refresh_s: float = Field(
        60.0,
        gt=0,
        description="how often the running service re-reads the registry without a change "
        "notice (it re-reads at once on one)",
    )
    tick_interval_s: float = Field(
        1.0, gt=0, description="period of the alarm engine's timer evaluation"
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="longest a clean shutdown waits for the last commits"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve /metrics on this port (0: off; the API serves it)"
    )


class ModbusSettings(_Group):
    connect_timeout_s: float = Field(
        2.0, gt=0, le=60, description="longest a TCP connection attempt to a device may take"
    )
    reconnect_min_s: float = Field(0.25, gt=0, description="first wait before reconnecting")
    reconnect_max_s: float = Field(
        10.0,
        gt=0,
        description="longest wait between reconnects (never longer than the line's shortest "
        "poll period, so a device that comes back is polled within two periods)",
    )
    breaker_trip_after: int = Field(
        3, ge=1, description="consecutive failed polls before a unit on a shared line is skipped"
    )
    probe_min_s: float = Field(2.0, gt=0, description="first wait before probing a skipped unit")
    probe_max_s: float = Field(30.0, gt=0, description="longest wait between probes")
    log_quiet_s: float = Field(
        300.0, ge=0, description="a device's state changes within this time log at debug"
    )


class ApiSettings(_Group):
    host: str = Field("127.0.0.1", description="address the API binds")
    port: int = Field(8080, ge=0, le=65535, description="port the API binds")
    max_points: int = Field(
        2000, ge=10, description="most points a readings query returns (larger asks are cut)"
    )
    default_points: int = Field(
        1000, ge=10, description="points a readings query returns when it does not say"
    )
    max_range_days: float = Field(
        400.0, gt=0, description="longest range one readings query covers (longer ones are cut)"
    )
    risk_combine: Literal["max", "dynamic"] = Field(
        "max",
        description="risk colour of an asset: max(static, dynamic), or the dynamic tier alone",
    )
    stream_queue_max: int = Field(
        256, ge=1, description="messages queued for one live-stream client before it is dropped"
    )
    stream_latest_interval_s: float = Field(
        1.0, gt=0, description="how often the live stream pushes changed latest values"
    )
    metrics_refresh_s: float = Field(
        5.0, gt=0, description="how often /metrics refreshes the alarm counts from the database"
    )
    auth_failures_per_min: int = Field(
        20, ge=1, description="failed token checks one client may make per minute before a 429"
    )


class NotifySettings(_Group):
    webhooks: tuple[str, ...] = Field(
        (), description="URLs that receive every non-suppressed alarm event as a JSON POST"
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="longest one webhook POST may take")
    webhook_attempts: int = Field(5, ge=1, description="attempts per webhook delivery")
    webhook_backoff_s: float = Field(
        1.0, gt=0, description="delay before the second attempt; doubles after each failure"
    )
    escalation_after_s: float = Field(
        900.0,
        gt=0,
        description="an orange or red alarm still unacknowledged this long after it was raised "
        "is escalated",
    )
    escalation_webhooks: tuple[str, ...] = Field(
        (), description="second targets (URLs) that receive escalations"
    )
    escalation_check_s: float = Field(
        10.0, gt=0, description="how often the notifier looks for alarms to escalate"
    )
    mqtt_client_id: str = Field(
        "hazwatch-notify", description="client id of the notifier's MQTT connection"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HAZWATCH_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    modbus: ModbusSettings = ModbusSettings()
    api: ApiSettings = ApiSettings()
    notify: NotifySettings = NotifySettings()
    log_level: str = Field("INFO", description="root log level")
