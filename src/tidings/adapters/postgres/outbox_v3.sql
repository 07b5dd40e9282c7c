-- tidings outbox part, version 2 to 3 (PostgreSQL): the relays' lanes move to the leases
-- part (the set 'outbox'), with their owners, tokens and lease times, so relays that hold
-- lanes now keep them until their leases run out and every token keeps going up.
INSERT INTO {leases} (name, slot, owner, token, lease_until)
    SELECT 'outbox', lane, owner, token, lease_until FROM {relay_lanes};
INSERT INTO {lease_owners} (name, owner, alive_until)
    SELECT 'outbox', relay_id, alive_until FROM {relay_nodes};
DROP TABLE IF EXISTS {relay_lanes};
DROP TABLE IF EXISTS {relay_nodes};
