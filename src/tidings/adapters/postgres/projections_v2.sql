-- tidings projections part, version 1 to 2 (PostgreSQL).

-- When a rebuild's run began and its shadow's position then: its rate and ETA in status.
ALTER TABLE {projections} ADD COLUMN started_at DOUBLE PRECISION NOT NULL DEFAULT 0;

ALTER TABLE {projections} ADD COLUMN started_position BIGINT NOT NULL DEFAULT 0;
