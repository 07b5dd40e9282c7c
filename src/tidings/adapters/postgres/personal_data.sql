-- tidings personal-data keys for PostgreSQL (crypto-shredding, spec 6.3.6 mistake 5).

-- One AES-256 key per subject, created in the transaction that first seals a field of
-- theirs. Forgetting a subject deletes its row; run VACUUM (FULL) on this table afterwards
-- so the dead row's bytes leave the data files (see docs/event-sourcing.md).
CREATE TABLE IF NOT EXISTS {subject_keys} (
    subject     TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    key         BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
