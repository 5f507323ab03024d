"""Prometheus metrics of the ingest pipeline, registered in a registry the caller owns.

The API serves the same registry at /metrics; `hazwatch ingest --metrics-port` can serve it on
its own. Counters are incremented per burst or batch, not per message, to stay off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    messages_received: Counter  # labels: source
    readings_received: Counter  # labels: source; decoded readings handed to the batcher
    readings_stored: Counter  # new rows committed to `readings`
    readings_duplicate: Counter  # rows already stored (redeliveries) or repeated in a batch
    quarantined: Counter  # labels: source, reason; quarantine records (one per message+reason)
    readings_rejected: Counter  # labels: source, reason; readings refused
    quarantine_dropped: Counter  # records lost because the quarantine buffer was full
    batch_latency: Histogram  # seconds from store call to commit, retries included
    batch_rows: Histogram
    queue_depth: Gauge  # readings waiting in the batcher
    quarantine_depth: Gauge  # quarantine records waiting to be written
    db_errors: Counter  # labels: writer; failed transactions (each is retried)
    mqtt_connections: Counter  # labels: client; successful CONNACKs
    mqtt_disconnects: Counter  # labels: client
    mqtt_acks_dropped: Counter  # labels: client; acks of a lost connection, not sent
    device_status: Counter  # labels: status; device status updates written
    seq_gap_messages: Counter  # numbered messages a device sent that never arrived

    @classmethod
    def create(
        cls, registry: CollectorRegistry, namespace: str = "hazwatch_ingest"
    ) -> IngestMetrics:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=namespace, registry=registry)

        return cls(
            messages_received=counter(
                "messages_received", "messages received from a source", ("source",)
            ),
            readings_received=counter(
                "readings_received", "decoded readings handed to the batcher", ("source",)
            ),
            readings_stored=counter("readings_stored", "new readings committed"),
            readings_duplicate=counter(
                "readings_duplicate", "readings already stored (redeliveries), not stored again"
            ),
            quarantined=counter(
                "quarantined", "quarantine records by reason", ("source", "reason")
            ),
            readings_rejected=counter(
                "readings_rejected", "readings refused, by reason", ("source", "reason")
            ),
            quarantine_dropped=counter(
                "quarantine_dropped",
                "quarantine records lost because the quarantine buffer was full",
            ),
            batch_latency=Histogram(
                "batch_latency_seconds",
                "time to commit one batch, retries included",
                namespace=namespace,
                registry=registry,
                buckets=LATENCY_BUCKETS_S,
            ),
            batch_rows=Histogram(
                "batch_rows",
                "readings per committed batch",
                namespace=namespace,
                registry=registry,
                buckets=(1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000),
            ),
            queue_depth=gauge("queue_depth_rows", "readings waiting in the batcher"),
            quarantine_depth=gauge(
                "quarantine_depth_records", "quarantine records waiting to be written"
            ),
            db_errors=counter(
                "db_errors", "failed database transactions (each is retried)", ("writer",)
            ),
            mqtt_connections=counter("mqtt_connections", "MQTT sessions established", ("client",)),
            mqtt_disconnects=counter("mqtt_disconnects", "MQTT connections lost", ("client",)),
            mqtt_acks_dropped=counter(
                "mqtt_acks_dropped",
                "acknowledgements not sent because their connection was lost (redelivered)",
                ("client",),
            ),
            device_status=counter(
                "device_status_updates", "device status updates written", ("status",)
            ),
            seq_gap_messages=counter(
                "seq_gap_messages", "numbered messages a device sent that never arrived"
            ),
        )

    def watch(
        self, queue_depth: Callable[[], float], quarantine_depth: Callable[[], float]
    ) -> None:
        """Read the gauges from the live objects at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.quarantine_depth.set_function(quarantine_depth)
