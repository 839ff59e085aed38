-- Owners, tasks and the scheduler instances that lease them.

CREATE TABLE owner (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_digest BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    tasks_in_queue INTEGER NOT NULL DEFAULT 0
);

-- One row per task. payload/response/metadata/error are AES-GCM sealed; the
-- scheduling columns are clear so they can be indexed. due_at is set only
-- while the task is RUNNING: the next attempt time, or the lease expiry
-- while an attempt is in flight (lease_token set).
CREATE TABLE task (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES owner(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    estimate_execution_at INTEGER NOT NULL,
    estimate_end_at INTEGER NOT NULL DEFAULT 0,
    estimate_next_retry_at INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0,
    retry_limit INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error BLOB,
    response BLOB,
    metadata BLOB,
    payload BLOB NOT NULL,
    due_at INTEGER,
    lease_token INTEGER,
    lease_ms INTEGER NOT NULL,
    lease_owner TEXT
);

CREATE INDEX task_due ON task(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX task_leased ON task(lease_owner) WHERE lease_owner IS NOT NULL;
-- id ends each list index so that "ORDER BY created_at, id" reads the index in order
CREATE INDEX task_owner_created ON task(owner_id, created_at, id);
CREATE INDEX task_owner_state_created ON task(owner_id, state, created_at, id);

-- The owner's queue counter follows every way a task leaves RUNNING/PAUSED.
CREATE TRIGGER task_leaves_queue AFTER UPDATE OF state ON task
WHEN OLD.state IN ('RUNNING', 'PAUSED') AND NEW.state NOT IN ('RUNNING', 'PAUSED')
BEGIN
    UPDATE owner SET tasks_in_queue = tasks_in_queue - 1 WHERE id = NEW.owner_id;
END;

CREATE TRIGGER task_deleted_from_queue AFTER DELETE ON task
WHEN OLD.state IN ('RUNNING', 'PAUSED')
BEGIN
    UPDATE owner SET tasks_in_queue = tasks_in_queue - 1 WHERE id = OLD.owner_id;
END;

CREATE TABLE instance (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
