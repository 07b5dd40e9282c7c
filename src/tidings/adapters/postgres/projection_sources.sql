-- Projections fed by a broker stream (another service's events, through the inbox): one
-- row per projection and source service. position is the highest position in the
-- source's log the read model holds (0 until a message carries one: the CloudEvents
-- extension tidingsposition); event_time is the time in the last message applied, and
-- applied_at when it was applied (seconds since the epoch); positioned says whether that
-- message carried a position. All move in the transaction that writes the read model.
CREATE TABLE IF NOT EXISTS {projection_sources} (
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    position    BIGINT NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL,
    positioned  INTEGER NOT NULL,
    events      BIGINT NOT NULL,
    PRIMARY KEY (name, source)
);

-- Each source position a stream projection applied: messages of different aggregates
-- arrive out of the source's order, so "the highest applied" does not mean "every one
-- below it"; a read-your-writes wait looks for its own position here.
CREATE TABLE IF NOT EXISTS {projection_positions} (
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    position    BIGINT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, source, position)
);
