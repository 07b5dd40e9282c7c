-- tidings core tables for SQLite. Table names come from the configured prefix.
CREATE TABLE IF NOT EXISTS {schema_version} (
    component   TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- The event log: every event recorded by an aggregate, in one global order (position).
-- Writers hold the database's single write lock (BEGIN IMMEDIATE), so positions become
-- visible in order and a reader can never skip one.
CREATE TABLE IF NOT EXISTS {events} (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    stream_id       TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    occurred_at     TEXT NOT NULL,
    recorded_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    data            TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{{}}',
    UNIQUE (stream_id, version)
);
