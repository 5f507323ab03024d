-- HazWatch core schema: the registry, readings and their rollup, quarantine, alarms, users.
-- Applied by `hazwatch db migrate` inside one transaction.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Registry ----------------------------------------------------------------------------------
-- Rows are upserted by `hazwatch registry load` and keyed by their text keys; ids are stable
-- across reloads. Entries removed from the registry file are deactivated, never deleted, so
-- their readings and alarms keep their meaning.

CREATE TABLE sites (
    site_id     serial PRIMARY KEY,
    key         text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9][a-z0-9_-]*$'),
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai',
    latitude    double precision,
    longitude   double precision,
    attrs       jsonb NOT NULL DEFAULT '{}',
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assets (
    asset_id    serial PRIMARY KEY,
    site_id     integer NOT NULL REFERENCES sites,
    key         text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9][a-z0-9_-]*$'),
    kind        text NOT NULL,
    name        text NOT NULL,
    -- Static risk colour from an assessment (0 none .. 4 red), and the GB 18218 R value it
    -- came from where one was computed.
    static_risk smallint NOT NULL DEFAULT 0 CHECK (static_risk BETWEEN 0 AND 4),
    r_value     double precision,
    params      jsonb NOT NULL DEFAULT '{}',
    votes       jsonb NOT NULL DEFAULT '[]',
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_site_idx ON assets (site_id);

CREATE TABLE devices (
    device_id   serial PRIMARY KEY,
    site_id     integer NOT NULL REFERENCES sites,
    asset_id    integer REFERENCES assets,
    key         text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9][a-z0-9_-]*$'),
    name        text NOT NULL,
    protocol    text NOT NULL CHECK (protocol IN ('mqtt', 'modbus')),
    modbus      jsonb,  -- connection and poll groups; points are on the sensors
    status      text NOT NULL DEFAULT 'unknown',  -- online / offline from the MQTT status topic
    status_at   timestamptz,
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sensors (
    sensor_id   serial PRIMARY KEY,
    key         text NOT NULL UNIQUE,  -- '<device>/<channel>', or '<asset>/<channel>' if derived
    device_id   integer REFERENCES devices,  -- NULL for derived signals
    asset_id    integer NOT NULL REFERENCES assets,
    channel     text NOT NULL,
    kind        text NOT NULL,
    unit        text NOT NULL,
    name        text NOT NULL,
    range_min   double precision NOT NULL,
    range_max   double precision NOT NULL CHECK (range_max > range_min),
    period_s    double precision CHECK (period_s > 0),  -- NULL: event stream
    params      jsonb NOT NULL DEFAULT '{}',
    rules       jsonb NOT NULL DEFAULT '{}',  -- per-sensor overrides of the kind's defaults
    modbus      jsonb,  -- register map of this point
    derive      jsonb,  -- how a derived signal is computed
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, channel)
);
CREATE INDEX sensors_asset_idx ON sensors (asset_id);

-- Readings ----------------------------------------------------------------------------------
-- No foreign key to sensors: it would cost a lookup per row on the COPY path, and ingest only
-- writes sensor ids it resolved from the registry. Value is NULL when a collector could not
-- read the point; the quality code then says why (hazwatch.domain.Quality).

CREATE TABLE readings (
    sensor_id   integer NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    quality     smallint NOT NULL DEFAULT 0
);

-- Chunk interval: 6 hours. Timescale's guidance is that the most recent chunk with its indexes
-- should fit in about a quarter of memory. The design load of a city deployment is about 2k
-- readings/s (5k sensors at 1-10 s): 43M rows per 6 h, about 3.5 GB with the unique index,
-- which fits a quarter of 24 GiB. Raw retention is applied with drop_chunks, so 6 h is also
-- the granularity of retention; 30 days of history are 120 chunks, cheap to plan, and the
-- API reads long ranges from readings_1m anyway.
SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '6 hours');

-- The idempotency key: a replayed or redelivered reading is the same row.
CREATE UNIQUE INDEX readings_sensor_ts_key ON readings (sensor_id, ts DESC);

-- One-minute rollup, maintained by ingest from each committed batch (the Apache build of
-- TimescaleDB has no continuous aggregates). Only rows that were actually inserted are merged,
-- so redeliveries do not count twice; min/max/sum/count merge in any order, and `last` keeps
-- the reading with the latest timestamp.
CREATE TABLE readings_1m (
    sensor_id   integer NOT NULL,
    bucket      timestamptz NOT NULL,
    min         double precision,
    max         double precision,
    sum         double precision NOT NULL DEFAULT 0,
    count       integer NOT NULL,  -- readings with a value
    bad_count   integer NOT NULL DEFAULT 0,  -- readings with bad quality
    last_ts     timestamptz NOT NULL,
    last        double precision,
    PRIMARY KEY (sensor_id, bucket)
);
-- 7-day chunks: one row per sensor per minute is 1,440 rows per sensor per chunk-day.
SELECT create_hypertable('readings_1m', 'bucket', chunk_time_interval => interval '7 days');

-- The latest value of each sensor, for the console and `latest values` without a scan.
CREATE TABLE latest (
    sensor_id   integer PRIMARY KEY,
    ts          timestamptz NOT NULL,
    value       double precision,
    quality     smallint NOT NULL
);

-- Quarantine: every payload or reading ingest refused, with the reason. Never silently dropped.
CREATE TABLE quarantine (
    quarantine_id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL,  -- 'mqtt' or 'modbus'
    topic       text,
    reason      text NOT NULL,  -- a short code: malformed_json, unknown_sensor, out_of_range...
    detail      text,
    payload     bytea
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at);
CREATE INDEX quarantine_reason_idx ON quarantine (reason, received_at);

-- Alarms (ISA-18.2 lifecycle) ----------------------------------------------------------------

CREATE TABLE alarms (
    alarm_id    bigserial PRIMARY KEY,
    sensor_id   integer NOT NULL REFERENCES sensors,
    asset_id    integer NOT NULL REFERENCES assets,
    site_id     integer NOT NULL REFERENCES sites,
    rule        text NOT NULL,  -- high, low, rate, trend, stale, quality, vote:<name>
    state       text NOT NULL CHECK (state IN
                    ('active_unacked', 'active_acked', 'cleared_unacked', 'closed')),
    tier        smallint NOT NULL CHECK (tier BETWEEN 0 AND 4),  -- current; 0 once cleared
    max_tier    smallint NOT NULL CHECK (max_tier BETWEEN 1 AND 4),
    predicted   boolean NOT NULL DEFAULT false,  -- raised early by a trend projection
    value       double precision,
    message     text NOT NULL DEFAULT '',
    raised_at   timestamptz NOT NULL,
    cleared_at  timestamptz,
    acked_at    timestamptz,
    acked_by    text,
    closed_at   timestamptz,
    shelved_until timestamptz,
    shelve_reason text,
    out_of_service boolean NOT NULL DEFAULT false,
    assignee    text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- One open episode per (sensor, rule).
CREATE UNIQUE INDEX alarms_open_key ON alarms (sensor_id, rule) WHERE state <> 'closed';
CREATE INDEX alarms_state_idx ON alarms (state, tier) WHERE state <> 'closed';
CREATE INDEX alarms_raised_idx ON alarms (raised_at DESC);
CREATE INDEX alarms_site_idx ON alarms (site_id, raised_at DESC);

-- The append-only audit trail of every alarm transition and operator action.
CREATE TABLE alarm_events (
    event_id    bigserial PRIMARY KEY,
    alarm_id    bigint NOT NULL REFERENCES alarms,
    ts          timestamptz NOT NULL,  -- when it happened (reading time for engine events)
    recorded_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,  -- raised, escalated, deescalated, cleared, acknowledged, ...
    tier        smallint NOT NULL CHECK (tier BETWEEN 0 AND 4),
    value       double precision,
    actor       text,  -- user name for operator actions, 'engine' for the engine
    comment     text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alarm_events_alarm_idx ON alarm_events (alarm_id, event_id);
CREATE INDEX alarm_events_ts_idx ON alarm_events (ts DESC);

CREATE FUNCTION hazwatch_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER alarm_events_append_only BEFORE UPDATE OR DELETE ON alarm_events
    FOR EACH ROW EXECUTE FUNCTION hazwatch_append_only();

-- Notifications delivery log (MQTT topic, webhooks, escalation).
CREATE TABLE notifications (
    notification_id bigserial PRIMARY KEY,
    event_id    bigint REFERENCES alarm_events,
    alarm_id    bigint REFERENCES alarms,
    channel     text NOT NULL,  -- 'mqtt', 'webhook', 'escalation'
    target      text NOT NULL,
    status      text NOT NULL,  -- 'pending', 'delivered', 'failed'
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX notifications_status_idx ON notifications (status, created_at);

-- Users and tokens -------------------------------------------------------------------------

CREATE TABLE users (
    user_id     serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'crew', 'engineer', 'admin')),
    site_scope  text[],  -- NULL: every site
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    token_id    serial PRIMARY KEY,
    user_id     integer NOT NULL REFERENCES users,
    name        text NOT NULL DEFAULT '',
    token_hash  bytea NOT NULL UNIQUE,  -- SHA-256 of the secret; the secret is shown once
    prefix      text NOT NULL,  -- first characters, to recognise a token in a list
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    last_used_at timestamptz
);

-- Audit of configuration changes (rule edits over the API, registry loads).
CREATE TABLE audit_log (
    audit_id    bigserial PRIMARY KEY,
    ts          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    before      jsonb,
    after       jsonb
);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION hazwatch_append_only();
