-- A keyed digest of the target's host, so that lists filter on it while the host, part
-- of the sealed request, stays unreadable; "" until the server fills it in (rows written
-- before this, or resealed by rotate-key: it alone holds the key).
ALTER TABLE task ADD COLUMN target_host TEXT NOT NULL DEFAULT '';
CREATE INDEX task_owner_host_created ON task(owner_id, target_host, created_at, id);

-- Each task's attempts (the newest ATTEMPT_HISTORY of them), and each owner's tasks
-- counted by state so that the counts are exact and cost no scan of the task table:
-- kept by triggers on every change, except outcomes (the only way to SUCCESS or ERROR),
-- which the batch that writes them counts in one statement per owner (a trigger per row
-- took a quarter of the writer's time in a burst). The queue counter does the same.

CREATE TABLE attempt (
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    error BLOB,
    response_bytes INTEGER NOT NULL,
    http_version TEXT,
    remote_address TEXT,
    dns_ms REAL NOT NULL,
    connect_ms REAL NOT NULL,
    tls_ms REAL NOT NULL,
    first_byte_ms REAL NOT NULL,
    total_ms REAL NOT NULL,
    PRIMARY KEY (task_id, number)
) WITHOUT ROWID;

CREATE TRIGGER task_attempts_deleted AFTER DELETE ON task
BEGIN
    DELETE FROM attempt WHERE task_id = OLD.id;
END;

CREATE TABLE task_count (
    owner_id TEXT NOT NULL,
    state TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    PRIMARY KEY (owner_id, state)
) WITHOUT ROWID;

INSERT INTO task_count (owner_id, state, tasks)
SELECT owner_id, state, count(*) FROM task GROUP BY owner_id, state;

CREATE TRIGGER task_counted AFTER INSERT ON task
BEGIN
    INSERT INTO task_count (owner_id, state, tasks) VALUES (NEW.owner_id, NEW.state, 1)
    ON CONFLICT (owner_id, state) DO UPDATE SET tasks = tasks + 1;
END;

CREATE TRIGGER task_count_moved AFTER UPDATE OF state ON task
WHEN OLD.state <> NEW.state AND NEW.state NOT IN ('SUCCESS', 'ERROR')
BEGIN
    UPDATE task_count SET tasks = tasks - 1 WHERE owner_id = OLD.owner_id AND state = OLD.state;
    INSERT INTO task_count (owner_id, state, tasks) VALUES (NEW.owner_id, NEW.state, 1)
    ON CONFLICT (owner_id, state) DO UPDATE SET tasks = tasks + 1;
END;

DROP TRIGGER task_leaves_queue;
CREATE TRIGGER task_leaves_queue AFTER UPDATE OF state ON task
WHEN OLD.state IN ('RUNNING', 'PAUSED')
    AND NEW.state NOT IN ('RUNNING', 'PAUSED', 'SUCCESS', 'ERROR')
BEGIN
    UPDATE owner SET tasks_in_queue = tasks_in_queue - 1 WHERE id = NEW.owner_id;
END;

CREATE TRIGGER task_uncounted AFTER DELETE ON task
BEGIN
    UPDATE task_count SET tasks = tasks - 1 WHERE owner_id = OLD.owner_id AND state = OLD.state;
END;

CREATE TRIGGER owner_counts_deleted AFTER DELETE ON owner
BEGIN
    DELETE FROM task_count WHERE owner_id = OLD.id;
END;
