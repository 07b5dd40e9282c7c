-- The inbox (spec 6.1.3): one row per (event, handler). The row, the handler's writes and
-- the status 'processed' commit in one transaction; 'failed' rows count the attempts.
CREATE TABLE IF NOT EXISTS {inbox} (
    event_id          TEXT NOT NULL,
    handler_name      TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('processing', 'processed', 'failed')),
    payload           TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    processed_at      TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    error_message     TEXT,
    PRIMARY KEY (event_id, handler_name)
);
CREATE INDEX IF NOT EXISTS {inbox_bare}_processed ON {inbox_bare} (processed_at)
    WHERE status = 'processed';

-- Messages no handler could take: bad input (handler_name '*') or a handler that kept
-- failing. The body is kept as it arrived, so a retry sees exactly the same message.
CREATE TABLE IF NOT EXISTS {inbox_dead_letters} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT,
    handler_name  TEXT NOT NULL,
    event_type    TEXT,
    body          BLOB NOT NULL,
    reason        TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    dead_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- What each consumer fetched and has not finished (handled, found a duplicate, buried):
-- one row per fetched batch, written before its handlers run, its messages in items as
-- {{"<event id>": ["<aggregate id>", <version>]}}; the transaction that handles messages
-- takes them out, and deletes a row left empty. A consumer started after a crash finds
-- here the earlier events of an aggregate that the broker will deliver again, and holds
-- the aggregate's later events back until they are done. seen_at is the consumer's clock
-- (seconds since the epoch) when it fetched the batch.
CREATE TABLE IF NOT EXISTS {inbox_fetched} (
    id       INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    seen_at  DOUBLE PRECISION NOT NULL,
    items    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {inbox_fetched_bare}_consumer ON {inbox_fetched_bare} (consumer, seen_at);
