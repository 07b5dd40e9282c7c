-- Workers seen alive: each relay, consumer, saga worker and projection runner started by
-- the tidings command writes its row every few seconds (seen_at, seconds since the epoch)
-- and deletes it on a clean stop; `tidings status` lists them with their heartbeats.
CREATE TABLE IF NOT EXISTS {workers} (
    worker_id  TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at    DOUBLE PRECISION NOT NULL
);
