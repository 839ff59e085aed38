-- Scheduled backups: one row per cron tick, claimed by exactly one server
-- process (the primary key makes the claim atomic), so that several servers
-- on one database take one backup per tick between them.

CREATE TABLE backup_run (
    tick INTEGER PRIMARY KEY,       -- the cron tick, ms since the epoch (UTC)
    instance_id TEXT NOT NULL,      -- instance.id of the claiming server
    state TEXT NOT NULL,            -- RUNNING, DONE or FAILED
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    location TEXT,                  -- where the archive went (path or s3:// URL)
    size INTEGER,                   -- bytes of the archive as stored
    error TEXT
);

CREATE INDEX backup_run_running ON backup_run(instance_id) WHERE state = 'RUNNING';
