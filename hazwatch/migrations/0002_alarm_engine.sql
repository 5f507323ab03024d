-- Alarm engine: asset-level alarms (votes) and the engine's persisted latch state.

-- A vote alarm belongs to an asset, not to one sensor: sensor_id is NULL, and the asset's
-- (asset_id, rule) is the key of its one open episode. Sensor alarms keep (sensor_id, rule).
ALTER TABLE alarms ALTER COLUMN sensor_id DROP NOT NULL;
ALTER TABLE alarms ADD CONSTRAINT alarms_subject_fits_rule
    CHECK ((sensor_id IS NULL) = (rule LIKE 'vote:%'));
CREATE UNIQUE INDEX alarms_open_asset_key ON alarms (asset_id, rule)
    WHERE sensor_id IS NULL AND state <> 'closed';

-- Each sensor's latches as the engine left them, written in the transaction of the batch that
-- changed them (only when they change: not per reading). With `readings` (last reading time,
-- history, last valid value) and the open `alarms`, this is what a restart rebuilds from.
-- Times are epoch microseconds, as in the engine; -4611686018427387904 (-2^62) means never.
CREATE TABLE alarm_engine_state (
    sensor_id     integer PRIMARY KEY REFERENCES sensors,
    state_ts_us   bigint NOT NULL,   -- the sensor's clock when written
    raw           smallint NOT NULL, -- bit i: raw latch i set (i = side * 4 + level - 1)
    delayed       smallint NOT NULL, -- bit i: delayed latch i set
    since_us      bigint[] NOT NULL CHECK (cardinality(since_us) = 8),
    tiers         smallint[] NOT NULL CHECK (cardinality(tiers) = 6),  -- high, low, rate, trend, stale, quality
    member_ts_us  bigint NOT NULL,   -- last change of max(high, low): the votes' clock
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The engine counts time in epoch microseconds; these convert exactly (no float in between).
CREATE FUNCTION hazwatch_us_to_ts(us bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN timestamptz 'epoch' + us * interval '1 microsecond';

CREATE FUNCTION hazwatch_ts_to_us(ts timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (extract(epoch FROM ts) * 1000000)::bigint;
