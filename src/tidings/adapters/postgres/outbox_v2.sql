-- tidings outbox part, version 1 to 2 (PostgreSQL).

-- The index of the backlog on (published, position), beside the partial index of
-- unpublished rows: with many published rows kept, the planner otherwise scanned the
-- whole table for every claim (see outbox.sql).
CREATE INDEX IF NOT EXISTS {outbox_bare}_backlog ON {outbox} (published, position);
