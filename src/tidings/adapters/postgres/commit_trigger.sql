-- Installed by the first projection runner on this schema (not by the schema itself:
-- NOTIFY takes a lock at commit that serializes the commits that notify, which writers
-- pay only where something follows the log live).
--
-- Every statement that inserts events NOTIFYs the commit channel (delivered at commit,
-- never for a rollback; one per transaction however many statements): a projection
-- runner LISTENing there wakes at once, with or without the outbox (which NOTIFYs the
-- same channel). Inside the server, so the one-statement commit stays one round trip.
CREATE OR REPLACE FUNCTION {schema}.{prefix}events_committed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{commit_channel}', ''); RETURN NULL; END $$;

CREATE OR REPLACE TRIGGER {prefix}events_committed AFTER INSERT ON {events}
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{prefix}events_committed();
