-- tidings sagas part, version 2 to 3: the transitions metrics and `tidings status` count
-- (failed compensations, recorded discrepancies) found through small partial indexes, so
-- a scrape reads those rows only, never the whole history.
CREATE INDEX IF NOT EXISTS {prefix}saga_transitions_compensation_failed
    ON {saga_transitions} (saga_id) WHERE kind = 'compensation_failed';
CREATE INDEX IF NOT EXISTS {prefix}saga_transitions_discrepancy
    ON {saga_transitions} (saga_id) WHERE kind = 'discrepancy';
