-- Every statement the PostgreSQL store runs, by name, in asyncpg's $n style.
-- {task_columns} expands to the columns of model.records.TaskRow, in its order,
-- and {task_arrays} to one typed array parameter per column (for unnest), $1 to $N.

-- name: insert_owner
INSERT INTO owner (id, name, key_digest, created_at, tasks_in_queue) VALUES ($1, $2, $3, $4, 0);

-- name: get_owner
SELECT id, name, key_digest, created_at, tasks_in_queue FROM owner WHERE id = $1;

-- name: lock_owner_named
SELECT tasks_in_queue FROM owner WHERE id = $1 AND name = $2 FOR UPDATE;

-- name: delete_owner
DELETE FROM owner WHERE id = $1;

-- name: replace_owner_key
UPDATE owner SET key_digest = $3 WHERE id = $1 AND key_digest = $2;

-- name: count_in_queue
-- $1 owners, $2 how many of their tasks entered (+) or left (-) the queue
UPDATE owner SET tasks_in_queue = owner.tasks_in_queue + d.delta
FROM unnest($1::text[], $2::integer[]) AS d(id, delta)
WHERE owner.id = d.id;

-- name: register_tasks
-- A group's registrations in one statement, so one round trip and one commit: the owners
-- locked in id order (two groups never wait for each other's owners; a locked row is read
-- again at its newest version), each task admitted while its owner's queue stays within
-- the task's limit, admitted tasks inserted (a duplicate id is left out, not an error),
-- the counters moved by what entered the queue, and the first due time announced, which
-- is delivered only when the statement commits. One row per task, in the given order.
-- {limits}, {queue_states}, {channel} and {prefix} are the parameters after the arrays.
WITH input AS (
    SELECT * FROM unnest({task_arrays}, {limits}::bigint[]) WITH ORDINALITY
        AS i({task_columns}, queue_limit, position)
),
owners AS MATERIALIZED (
    SELECT id, tasks_in_queue FROM owner
    WHERE id IN (SELECT owner_id FROM input) ORDER BY id FOR UPDATE
),
placed AS (
    SELECT input.position, owners.tasks_in_queue + row_number() OVER (
        PARTITION BY input.owner_id ORDER BY input.position) <= input.queue_limit AS fits
    FROM input JOIN owners ON owners.id = input.owner_id
),
inserted AS (
    INSERT INTO task ({task_columns})
    SELECT {task_columns} FROM input JOIN placed USING (position)
    WHERE placed.fits ORDER BY position
    ON CONFLICT (id) DO NOTHING
    RETURNING id, owner_id, state, due_at
),
counted AS (
    UPDATE owner SET tasks_in_queue = owner.tasks_in_queue + entered.count
    FROM (SELECT owner_id, count(*) AS count FROM inserted
          WHERE state = ANY({queue_states}::text[]) GROUP BY owner_id) AS entered
    WHERE owner.id = entered.owner_id
),
announced AS (
    SELECT pg_notify({channel}, {prefix} || first.id || '|' || first.due_at || '|0')
    FROM (SELECT id, due_at FROM inserted WHERE due_at IS NOT NULL
          ORDER BY due_at LIMIT 1) AS first
)
SELECT placed.position IS NOT NULL AS owner_found, coalesce(placed.fits, false) AS fits,
       inserted.id IS NOT NULL AS inserted, (SELECT count(*) FROM announced) AS announced
FROM input LEFT JOIN placed USING (position) LEFT JOIN inserted ON inserted.id = input.id
ORDER BY input.position;

-- name: get_task
SELECT {task_columns} FROM task WHERE id = $1 AND owner_id = $2;

-- name: lock_task
SELECT {task_columns} FROM task WHERE id = $1 AND owner_id = $2 FOR UPDATE;

-- name: list_tasks
-- {after}: the time ranges asked, and the start past a task in the order (a page at
-- any depth costs the same: the index is entered where the previous page ended)
SELECT {task_columns} FROM task WHERE owner_id = $1 {after}
ORDER BY {order_by} LIMIT $2 OFFSET $3;

-- name: list_tasks_in_state
SELECT {task_columns} FROM task WHERE owner_id = $1 AND state = $4 {after}
ORDER BY {order_by} LIMIT $2 OFFSET $3;

-- name: delete_task
DELETE FROM task WHERE id = $1 AND owner_id = $2 RETURNING {task_columns};

-- name: update_task
UPDATE task SET {assignments} WHERE id = $1 RETURNING {task_columns};

-- name: register_instance
INSERT INTO instance (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4);

-- name: heartbeat
UPDATE instance SET heartbeat_at = $2 WHERE id = $1;

-- name: list_instances
SELECT id, host, pid, heartbeat_at FROM instance;

-- name: delete_instances
DELETE FROM instance WHERE id = ANY($1::text[]);

-- name: release_orphan_leases
UPDATE task SET due_at = $1, lease_owner = NULL, lease_token = NULL
WHERE lease_owner IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM instance WHERE instance.id = task.lease_owner
);

-- name: release_instance_leases
UPDATE task SET due_at = $2, lease_owner = NULL, lease_token = NULL WHERE lease_owner = $1;

-- name: delete_instance
DELETE FROM instance WHERE id = $1;

-- name: claim_due_tasks
-- One statement: the due rows, oldest first, locked past those another node is
-- claiming (SKIP LOCKED), leased and returned in due order.
WITH due AS (
    SELECT id, due_at FROM task WHERE due_at <= $1
    ORDER BY due_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE task
    SET due_at = $1 + task.lease_ms, lease_owner = $3, lease_token = $4,
        attempts = task.attempts + 1
    FROM due WHERE task.id = due.id
    RETURNING task.id, task.payload, task.retry_count, task.retry_limit, task.attempts,
        task.estimate_execution_at, task.estimate_next_retry_at, due.due_at AS was_due
)
SELECT id, payload, retry_count, retry_limit, attempts, estimate_execution_at,
    estimate_next_retry_at, was_due
FROM leased ORDER BY was_due, id;

-- name: next_due_at
SELECT min(due_at) FROM task WHERE due_at IS NOT NULL;

-- name: list_attempts
SELECT {attempt_columns} FROM attempt
WHERE task_id = $1 AND number < $2 ORDER BY number DESC LIMIT $3;

-- name: task_owner
SELECT owner_id FROM task WHERE id = $1;

-- name: state_totals
SELECT state, sum(tasks) FROM task_count GROUP BY state;

-- name: due_backlog
SELECT count(*), min(due_at) FROM task WHERE due_at <= $1;

-- name: last_backup
SELECT max(finished_at) FROM backup_run WHERE state = 'DONE';

-- name: in_flight_by_instance
SELECT lease_owner, count(*) FROM task WHERE lease_owner IS NOT NULL GROUP BY lease_owner;

-- name: recent_backups
SELECT tick, instance_id, state, started_at, finished_at, location, size, error
FROM backup_run ORDER BY tick DESC LIMIT $1;

-- name: hostless_tasks
-- rows written before target_host existed, in id order past $1
SELECT id, payload FROM task WHERE target_host = '' AND id > $1 ORDER BY id LIMIT $2;

-- name: set_target_host
UPDATE task SET target_host = $1 WHERE id = $2;

-- name: count_tasks
SELECT state, sum(tasks) FROM task_count WHERE owner_id = $1 GROUP BY state;

-- name: record_outcomes
-- migrations/0003_record_outcomes.sql: outcomes, attempts, history trim and counters
SELECT record_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14);

-- name: delete_owner_counts
DELETE FROM task_count WHERE owner_id = $1;

-- name: fold_task_counts
-- the deltas the triggers added, folded into one row per owner and state (rows added
-- meanwhile are not seen by the DELETE, and stay)
WITH folded AS (DELETE FROM task_count RETURNING owner_id, state, tasks)
INSERT INTO task_count (owner_id, state, tasks)
SELECT owner_id, state, sum(tasks) FROM folded GROUP BY owner_id, state
HAVING sum(tasks) <> 0;

-- name: sealed_attempt_errors
-- key rotation: the sealed errors of these tasks' attempts
SELECT task_id, number, error FROM attempt WHERE task_id = ANY($1::text[]) AND error IS NOT NULL;

-- name: reseal_attempt_error
UPDATE attempt SET error = $1 WHERE task_id = $2 AND number = $3;

-- name: sealed_batch
-- key rotation: the sealed columns of model.records.SealedColumns, in id order
SELECT id, payload, metadata, response, error FROM task
WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE;

-- name: reseal_task
-- the host's digest was made with the old key: the next server start makes it again
UPDATE task SET payload = $2, metadata = $3, response = $4, error = $5, target_host = ''
WHERE id = $1;

-- name: running_backups
SELECT tick, instance_id FROM backup_run WHERE state = 'RUNNING' AND tick <> $1;

-- name: claim_tick
INSERT INTO backup_run (tick, instance_id, state, started_at) VALUES ($1, $2, 'RUNNING', $3)
ON CONFLICT (tick) DO NOTHING;

-- name: finish_tick
UPDATE backup_run
SET state = $3, finished_at = $4, location = $5, size = $6, error = $7
WHERE tick = $1 AND instance_id = $2;

-- name: prune_runs
DELETE FROM backup_run WHERE tick < (
    SELECT tick FROM backup_run ORDER BY tick DESC LIMIT 1 OFFSET $1
);

-- name: purge_finished
-- retention: up to $2 tasks that finished before $1, oldest first
DELETE FROM task WHERE id IN (
    SELECT id FROM task
    WHERE due_at IS NULL AND state IN ('SUCCESS', 'ERROR', 'REVOKED') AND estimate_end_at < $1
    ORDER BY estimate_end_at LIMIT $2
    FOR UPDATE SKIP LOCKED
);
