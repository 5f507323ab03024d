-- A read-only role for Grafana (and other dashboards): SELECT on every table, now and later,
-- and nothing else. Log in as a user that is a member of it, e.g.
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE hazwatch_reader;
-- The role is cluster-wide; creating it is skipped when an earlier database already made it.

DO $$
BEGIN
    CREATE ROLE hazwatch_reader NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- made by another database of this cluster
END $$;

GRANT USAGE ON SCHEMA public TO hazwatch_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO hazwatch_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO hazwatch_reader;
-- Tokens are secrets even when hashed: dashboards have no business reading them.
REVOKE SELECT ON api_tokens FROM hazwatch_reader;
