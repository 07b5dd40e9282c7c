-- Leases (docs/leases.md): numbered slots of named sets (the relay's lanes are the set
-- 'outbox'), each held by one owner at a time until lease_until (the owner's clock, in
-- seconds since the epoch). token goes up every time a slot changes owner: it fences
-- off an owner that lost its slot.
CREATE TABLE IF NOT EXISTS {leases} (
    name        TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    owner       TEXT,
    token       BIGINT NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (name, slot)
);

-- The owners of each set seen alive (every lease is a heartbeat), so that each takes a
-- fair share of the set's slots.
CREATE TABLE IF NOT EXISTS {lease_owners} (
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    alive_until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, owner)
);
