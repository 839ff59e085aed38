-- Owners, tasks, the scheduler instances that lease them, and scheduled backups:
-- the schema of the SQLite store in PostgreSQL's dialect. Times are ms since the
-- epoch (bigint), as on SQLite. The owners' queue counters are kept by the store's
-- statements (aggregated per statement), not by row triggers: a batch of 512
-- outcomes updates each owner once.

CREATE TABLE owner (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    key_digest bytea NOT NULL,
    created_at bigint NOT NULL,
    tasks_in_queue integer NOT NULL DEFAULT 0
);

-- One row per task. payload/response/metadata/error are AES-GCM sealed; the
-- scheduling columns are clear so they can be indexed. due_at is set only while
-- the task is RUNNING: the next attempt time, or the lease expiry while an
-- attempt is in flight (lease_token set). A queue table: rows are updated on
-- every attempt, so autovacuum runs on it early and often, and a fillfactor
-- leaves room for HOT updates (no index changes when only payload-free columns move).
CREATE TABLE task (
    id text PRIMARY KEY,
    owner_id text NOT NULL REFERENCES owner(id) ON DELETE CASCADE,
    state text NOT NULL,
    created_at bigint NOT NULL,
    estimate_execution_at bigint NOT NULL,
    estimate_end_at bigint NOT NULL DEFAULT 0,
    estimate_next_retry_at bigint NOT NULL DEFAULT 0,
    status_code integer NOT NULL DEFAULT 0,
    retry_count integer NOT NULL DEFAULT 0,
    retry_limit integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    error bytea,
    response bytea,
    metadata bytea,
    payload bytea NOT NULL,
    due_at bigint,
    lease_token bigint,
    lease_ms bigint NOT NULL,
    lease_owner text
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- what the scheduler reads: pending rows only
CREATE INDEX task_due ON task (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX task_leased ON task (lease_owner) WHERE lease_owner IS NOT NULL;
-- lists (id ends each so that "ORDER BY created_at, id" reads the index in order)
CREATE INDEX task_owner_created ON task (owner_id, created_at, id);
CREATE INDEX task_owner_state_created ON task (owner_id, state, created_at, id);
-- retention: finished rows by the time they finished
CREATE INDEX task_finished ON task (estimate_end_at) WHERE due_at IS NULL
    AND state IN ('SUCCESS', 'ERROR', 'REVOKED');

CREATE TABLE instance (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at bigint NOT NULL,
    heartbeat_at bigint NOT NULL
);

-- Scheduled backups: one row per cron tick, claimed by exactly one server.
CREATE TABLE backup_run (
    tick bigint PRIMARY KEY,
    instance_id text NOT NULL,
    state text NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint,
    location text,
    size bigint,
    error text
);
