-- A keyed digest of the target's host, so that lists filter on it while the host, part
-- of the sealed request, stays unreadable; '' until the server fills it in (rows written
-- before this, or resealed by rotate-key: it alone holds the key).
ALTER TABLE task ADD COLUMN target_host text NOT NULL DEFAULT '';
CREATE INDEX task_owner_host_created ON task (owner_id, target_host, created_at, id);

-- Each task's attempts (the newest ATTEMPT_HISTORY of them), and each owner's tasks
-- counted by state so that the counts are exact and cost no scan of the task table.
--
-- The counts are kept as deltas, rows that are only ever added, so that nodes never
-- wait on each other's counters: a trigger per statement adds one row per owner and
-- state that an INSERT or DELETE moved, a trigger per row the two rows of an action
-- (pause, resume, revoke), and a batch of outcomes (the only way to SUCCESS or ERROR)
-- adds its own in one statement. The store folds the deltas into one row per owner and
-- state every few seconds.

-- No foreign key: its check per inserted row (a share lock on the task) cost a burst
-- more than a tenth of its rate; the batch inserts only attempts of tasks that exist, and
-- a trigger deletes a task's attempts with it.
CREATE TABLE attempt (
    task_id text NOT NULL,
    number integer NOT NULL,
    due_at bigint NOT NULL,
    started_at bigint NOT NULL,
    ended_at bigint NOT NULL,
    status_code integer NOT NULL,
    error bytea,
    response_bytes bigint NOT NULL,
    http_version text,
    remote_address text,
    dns_ms double precision NOT NULL,
    connect_ms double precision NOT NULL,
    tls_ms double precision NOT NULL,
    first_byte_ms double precision NOT NULL,
    total_ms double precision NOT NULL,
    PRIMARY KEY (task_id, number)
);

CREATE TABLE task_count (
    owner_id text NOT NULL,
    state text NOT NULL,
    tasks bigint NOT NULL
);
CREATE INDEX task_count_owner ON task_count (owner_id);

INSERT INTO task_count (owner_id, state, tasks)
SELECT owner_id, state, count(*) FROM task GROUP BY owner_id, state;

CREATE FUNCTION task_count_inserted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_count (owner_id, state, tasks)
    SELECT owner_id, state, count(*) FROM new_rows GROUP BY owner_id, state;
    RETURN NULL;
END $$;

CREATE FUNCTION task_count_moved() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_count (owner_id, state, tasks)
    VALUES (OLD.owner_id, OLD.state, -1), (NEW.owner_id, NEW.state, 1);
    RETURN NULL;
END $$;

CREATE FUNCTION task_count_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_count (owner_id, state, tasks)
    SELECT owner_id, state, -count(*) FROM old_rows GROUP BY owner_id, state;
    RETURN NULL;
END $$;

CREATE TRIGGER task_counted AFTER INSERT ON task
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_count_inserted();

CREATE TRIGGER task_count_moved AFTER UPDATE OF state ON task
FOR EACH ROW WHEN (OLD.state <> NEW.state AND NEW.state NOT IN ('SUCCESS', 'ERROR'))
EXECUTE FUNCTION task_count_moved();

CREATE TRIGGER task_uncounted AFTER DELETE ON task
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_count_deleted();

CREATE FUNCTION task_attempts_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM attempt WHERE task_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER task_attempts_deleted AFTER DELETE ON task
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_attempts_deleted();
