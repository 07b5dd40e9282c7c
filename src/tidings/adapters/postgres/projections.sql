-- Projections: one checkpoint row per projection. position is the last event of the
-- global log the read model holds (applied, or skipped by an operator); it moves in the
-- transaction that writes the read model, so the two never disagree. state is running,
-- stopped or paused (on the event at failed_position, with its error). Times are seconds
-- since the epoch by the runner's clock; heartbeat tells a live runner from a stuck one.
-- started_at and started_position: when a rebuild's run began and its shadow's position
-- then (its rate and ETA); 0 on other rows.
CREATE TABLE IF NOT EXISTS {projections} (
    name              TEXT PRIMARY KEY,
    version           INTEGER NOT NULL,
    position          BIGINT NOT NULL,
    state             TEXT NOT NULL,
    lag_threshold     DOUBLE PRECISION NOT NULL,
    heartbeat         DOUBLE PRECISION NOT NULL,
    runner            TEXT NOT NULL,
    error             TEXT NOT NULL,
    failed_position   BIGINT NOT NULL,
    failed_event_id   TEXT NOT NULL,
    failed_event_type TEXT NOT NULL,
    failed_at         DOUBLE PRECISION NOT NULL,
    updated_at        DOUBLE PRECISION NOT NULL,
    started_at        DOUBLE PRECISION NOT NULL DEFAULT 0,
    started_position  BIGINT NOT NULL DEFAULT 0
);

-- Every event an operator skipped, with the error it had caused, who skipped it and why.
CREATE TABLE IF NOT EXISTS {projection_skips} (
    name        TEXT NOT NULL,
    position    BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    error       TEXT NOT NULL,
    skipped_at  DOUBLE PRECISION NOT NULL,
    by_whom     TEXT NOT NULL,
    note        TEXT NOT NULL,
    PRIMARY KEY (name, position)
);
