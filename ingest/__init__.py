"""Ingest: collectors (MQTT, Modbus), the pure decoder, the batcher and the reading store.

Data flows collector -> decode -> Batcher (numpy columns) -> ReadingStore (binary COPY), and a
message is acknowledged to its source only after the batch holding it is committed.
"""
