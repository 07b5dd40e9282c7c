-- tidings event-sourcing tables for PostgreSQL: snapshots.

-- Snapshots of aggregate state, written in the transaction that saves the events they
-- cover. A loader takes the newest one at or below the version it wants whose
-- aggregate_type and snapshot_version match its class; it never trusts any other.
CREATE TABLE IF NOT EXISTS {snapshots} (
    stream_id         TEXT NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    aggregate_type    TEXT NOT NULL,
    snapshot_version  INTEGER NOT NULL CHECK (snapshot_version >= 1),
    state             JSONB NOT NULL,
    taken_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_id, version)
);
