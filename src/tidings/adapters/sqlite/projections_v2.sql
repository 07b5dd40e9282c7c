-- tidings projections part, version 1 to 2 (SQLite).

-- When a rebuild's run began and its shadow's position then: its rate and ETA in status.
ALTER TABLE {projections} ADD COLUMN started_at REAL NOT NULL DEFAULT 0;

ALTER TABLE {projections} ADD COLUMN started_position INTEGER NOT NULL DEFAULT 0;
