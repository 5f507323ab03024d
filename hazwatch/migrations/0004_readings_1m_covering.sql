-- The API reads long ranges from the one-minute rollup: 30 days of one sensor is 43,200 rows.
-- Ingest merges into the rollup minute by minute for every sensor, so one sensor's rows are
-- spread one per heap page; through the primary key each row costs a heap visit. This index
-- carries the aggregates, so the same read is an index-only scan (measured: 57 ms -> 20 ms for
-- 30 days; bench/api.py). The cost is on ingest: rollup updates change indexed columns, so
-- they are no longer HOT updates and write both indexes.
CREATE INDEX readings_1m_covering ON readings_1m (sensor_id, bucket)
    INCLUDE (min, max, sum, count, bad_count);
