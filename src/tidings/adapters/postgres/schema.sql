-- tidings core tables for PostgreSQL. Schema and table names come from the configuration.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema_version} (
    component   TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The event log. Positions come from an identity sequence, so concurrent transactions can
-- commit them out of order; tx_id (the writer's transaction id, taken before its position)
-- lets a reader tell a gap that may still fill from one left by a rollback.
CREATE TABLE IF NOT EXISTS {events} (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    stream_id       TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    data            JSONB NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{{}}',
    tx_id           XID8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, version)
);
