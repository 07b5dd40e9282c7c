-- The transactional outbox (spec 6.1.2), written in the same transaction as the events.
CREATE TABLE IF NOT EXISTS {outbox} (
    position          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id          TEXT NOT NULL UNIQUE,
    event_type        TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    schema_version    INTEGER NOT NULL,
    occurred_at       TEXT NOT NULL,
    payload           TEXT NOT NULL,
    headers           TEXT NOT NULL DEFAULT '{{}}',
    shard             INTEGER NOT NULL,
    published         BOOLEAN NOT NULL DEFAULT FALSE,
    published_at      TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    retry_count       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL NOT NULL DEFAULT 0,
    last_error        TEXT
);
CREATE INDEX IF NOT EXISTS {outbox_bare}_unpublished ON {outbox_bare} (position)
    WHERE published = FALSE;
-- Rows waiting for a retry, which park their aggregate: only those that failed before,
-- so the rows of the usual flow never enter (nor cost) this index.
CREATE INDEX IF NOT EXISTS {outbox_bare}_retrying ON {outbox_bare} (aggregate_id, position)
    WHERE published = FALSE AND retry_count > 0;
CREATE INDEX IF NOT EXISTS {outbox_bare}_published ON {outbox_bare} (published_at)
    WHERE published = TRUE;

-- Events the relay gave up on; their aggregate's later events wait until an operator
-- retries or purges them.
CREATE TABLE IF NOT EXISTS {outbox_dead_letters} (
    position          INTEGER PRIMARY KEY,
    event_id          TEXT NOT NULL UNIQUE,
    event_type        TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    schema_version    INTEGER NOT NULL,
    occurred_at       TEXT NOT NULL,
    payload           TEXT NOT NULL,
    headers           TEXT NOT NULL,
    shard             INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    retry_count       INTEGER NOT NULL,
    last_error        TEXT NOT NULL,
    dead_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS {outbox_dead_letters_bare}_aggregate
    ON {outbox_dead_letters_bare} (aggregate_id);
