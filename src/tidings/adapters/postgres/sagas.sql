-- Sagas: one row per saga instance, its state as of its last transition. version is
-- bumped by every transition: a write that expects an older version is refused, so two
-- orchestrators never both move one saga. wake_at (seconds since the epoch) is when it
-- is next due: a retry's durable timer, the lease of a step being run, or the deadline
-- of a step waiting for a reply (never later than the saga's deadline while it runs).
-- Version 2 added the deadlines, the reply awaited, the steps whose command was never
-- answered, and the conversation the saga's messages belong to.
CREATE TABLE IF NOT EXISTS {sagas} (
    saga_id            TEXT PRIMARY KEY,
    saga_type          TEXT NOT NULL,
    definition_version INTEGER NOT NULL,
    state              TEXT NOT NULL,
    data               TEXT NOT NULL,
    step               INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    started            INTEGER NOT NULL,
    executed           TEXT NOT NULL,
    compensated        TEXT NOT NULL,
    errors             TEXT NOT NULL,
    version            INTEGER NOT NULL,
    wake_at            DOUBLE PRECISION NOT NULL,
    deadline_at        DOUBLE PRECISION NOT NULL DEFAULT 0,
    step_deadline_at   DOUBLE PRECISION NOT NULL DEFAULT 0,
    waiting            TEXT NOT NULL DEFAULT '',
    unanswered         TEXT NOT NULL DEFAULT '[]',
    correlation_id     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS {prefix}sagas_due ON {sagas} (state, wake_at);

-- Every transition of every saga, written in the transaction that made it: seq is the
-- saga's version after it (so a transition is written once), sub orders several of one.
CREATE TABLE IF NOT EXISTS {saga_transitions} (
    saga_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    sub      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    step     TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    detail   TEXT NOT NULL,
    by_whom  TEXT NOT NULL,
    amount   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (saga_id, seq, sub)
);

-- Version 3: what metrics count (failed compensations, discrepancies) through partial
-- indexes, so a scrape reads those rows only.
CREATE INDEX IF NOT EXISTS {prefix}saga_transitions_compensation_failed
    ON {saga_transitions} (saga_id) WHERE kind = 'compensation_failed';
CREATE INDEX IF NOT EXISTS {prefix}saga_transitions_discrepancy
    ON {saga_transitions} (saga_id) WHERE kind = 'discrepancy';
