-- tidings inbox part, version 1 to 2 (SQLite): the in-flight record of each consumer.

-- What each consumer fetched and has not finished (handled, found a duplicate, buried):
-- noted before its handlers run, deleted in the transaction that handles it. A consumer
-- started after a crash finds here the earlier events of an aggregate that the broker
-- will deliver again, and holds the aggregate's later events back until they are done.
-- seen_at is the consumer's clock (seconds since the epoch) when it last fetched the row.
CREATE TABLE IF NOT EXISTS {inbox_in_flight} (
    consumer          TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    aggregate_id      TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    seen_at           DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS {inbox_in_flight_bare}_aggregate
    ON {inbox_in_flight_bare} (consumer, aggregate_id, aggregate_version);
