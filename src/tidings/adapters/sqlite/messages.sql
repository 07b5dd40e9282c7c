-- Commands and integration messages (uow.send): what is not an aggregate's event.

-- The last sequence number given to messages of each ordering key: a message's
-- aggregate_version on the wire, increasing per key, as an aggregate's versions are.
CREATE TABLE IF NOT EXISTS {message_keys} (
    message_key  TEXT PRIMARY KEY,
    last_version BIGINT NOT NULL
);

-- Messages to be delivered later (timers, deadlines, reminders): a relay moves each into
-- the outbox once due_at (seconds since the epoch) has passed. Kept apart from the outbox
-- so that thousands of waiting timers never slow a claim of the backlog.
CREATE TABLE IF NOT EXISTS {scheduled_messages} (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    due_at            DOUBLE PRECISION NOT NULL,
    event_id          TEXT NOT NULL UNIQUE,
    event_type        TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    schema_version    INTEGER NOT NULL,
    occurred_at       TEXT NOT NULL,
    payload           TEXT NOT NULL,
    headers           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {scheduled_messages_bare}_due ON {scheduled_messages_bare} (due_at, id);
