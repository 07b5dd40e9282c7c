-- tidings event-sourcing tables for SQLite: snapshots, and the index of temporal reads.

-- Snapshots of aggregate state, written in the transaction that saves the events they
-- cover. A loader takes the newest one at or below the version it wants whose
-- aggregate_type and snapshot_version match its class; it never trusts any other.
CREATE TABLE IF NOT EXISTS {snapshots} (
    stream_id         TEXT NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    aggregate_type    TEXT NOT NULL,
    snapshot_version  INTEGER NOT NULL CHECK (snapshot_version >= 1),
    state             TEXT NOT NULL,
    taken_at          TEXT NOT NULL,
    PRIMARY KEY (stream_id, version)
);

-- "The stream as of a time" looks for the first event of the stream that occurred after
-- that time; this index answers it from the index alone.
CREATE INDEX IF NOT EXISTS {prefix}events_by_time ON {events} (stream_id, occurred_at, version);
