-- tidings outbox part, version 1 to 2 (PostgreSQL).

-- The partial index of unpublished rows becomes a full index on (published, position):
-- with many published rows kept, the planner chose a scan of the whole table over the
-- partial index for every claim (see outbox.sql).
DROP INDEX IF EXISTS {schema}.{prefix}outbox_unpublished;
CREATE INDEX IF NOT EXISTS {outbox_bare}_backlog ON {outbox} (published, position);
