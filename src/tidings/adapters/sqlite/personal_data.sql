-- tidings personal-data keys for SQLite (crypto-shredding, spec 6.3.6 mistake 5).

-- One AES-256 key per subject, created in the transaction that first seals a field of
-- theirs. Forgetting a subject deletes its row with secure_delete on and checkpoints the
-- WAL, so the key leaves the file; every value sealed with it is unreadable from then on.
CREATE TABLE IF NOT EXISTS {subject_keys} (
    subject     TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    key         BLOB NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
