-- tidings event_sourcing part, version 1 to 2 (SQLite).

-- The index events_by_time (stream_id, occurred_at, version) goes: every event written
-- paid for it, and "the stream as of a time" finds the first later event by reading the
-- stream in version order on the (stream_id, version) key instead.
DROP INDEX IF EXISTS {prefix}events_by_time;
