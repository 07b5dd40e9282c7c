-- tidings inbox part, version 2 to 3 (PostgreSQL): the in-flight record becomes a row per
-- fetched batch instead of a row per message; the rows of version 2 move over, one
-- row per batch (the messages a consumer noted at one time).

-- What each consumer fetched and has not finished (handled, found a duplicate, buried):
-- one row per fetched batch, written before its handlers run, its messages in items as
-- {{"<event id>": ["<aggregate id>", <version>]}}; the transaction that handles messages
-- takes them out, and deletes a row left empty. A consumer started after a crash finds
-- here the earlier events of an aggregate that the broker will deliver again, and holds
-- the aggregate's later events back until they are done. seen_at is the consumer's clock
-- (seconds since the epoch) when it fetched the batch.
CREATE TABLE IF NOT EXISTS {inbox_fetched} (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer TEXT NOT NULL,
    seen_at  DOUBLE PRECISION NOT NULL,
    items    JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS {inbox_fetched_bare}_consumer ON {inbox_fetched} (consumer, seen_at);

INSERT INTO {inbox_fetched} (consumer, seen_at, items)
    SELECT consumer, seen_at,
           jsonb_object_agg(event_id, jsonb_build_array(aggregate_id, aggregate_version))
    FROM {inbox_in_flight} GROUP BY consumer, seen_at;
DROP TABLE IF EXISTS {inbox_in_flight};
