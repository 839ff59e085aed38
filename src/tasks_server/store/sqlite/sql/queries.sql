-- Every statement the SQLite store runs, by name. {task_columns} expands to
-- the columns of model.records.TaskRow, in its order.

-- name: insert_owner
INSERT INTO owner (id, name, key_digest, created_at, tasks_in_queue)
VALUES (:id, :name, :key_digest, :created_at, 0);

-- name: get_owner
SELECT id, name, key_digest, created_at, tasks_in_queue FROM owner WHERE id = :id;

-- name: get_owner_named
SELECT id, name, key_digest, created_at, tasks_in_queue FROM owner
WHERE id = :id AND name = :name;

-- name: delete_owner
DELETE FROM owner WHERE id = :id;

-- name: replace_owner_key
UPDATE owner SET key_digest = :new_digest WHERE id = :id AND key_digest = :old_digest;


-- name: insert_tasks
-- {rows} is one "(?, ...)" per task; the caller has checked each owner's queue
-- limit in the same transaction, and the trigger task_enters_queue counts each
INSERT INTO task ({task_columns}) VALUES {rows};

-- name: insert_task
-- one task by itself (after a failed insert_tasks): the trigger task_enters_queue
-- counts it; nothing is inserted once the owner is at the limit
INSERT INTO task ({task_columns}) SELECT {task_values}
WHERE (SELECT tasks_in_queue FROM owner WHERE id = ?) < ?;

-- name: get_task
SELECT {task_columns} FROM task WHERE id = :id AND owner_id = :owner_id;

-- name: task_owner
SELECT owner_id FROM task WHERE id = :id;

-- name: list_tasks
-- {after}: the time ranges asked, and the start past the task :after in the order (a
-- page at any depth costs the same: the index is entered where the previous page ended)
SELECT {task_columns} FROM task WHERE owner_id = :owner_id {after}
ORDER BY {order_by} LIMIT :limit OFFSET :offset;

-- name: list_tasks_in_state
SELECT {task_columns} FROM task WHERE owner_id = :owner_id AND state = :state {after}
ORDER BY {order_by} LIMIT :limit OFFSET :offset;

-- name: delete_task
DELETE FROM task WHERE id = :id AND owner_id = :owner_id;

-- name: update_task
UPDATE task SET {assignments} WHERE id = :id;

-- name: register_instance
INSERT INTO instance (id, host, pid, started_at, heartbeat_at)
VALUES (:id, :host, :pid, :now, :now);

-- name: heartbeat
UPDATE instance SET heartbeat_at = :now WHERE id = :id;

-- name: list_instances
SELECT id, host, pid, heartbeat_at FROM instance;

-- name: delete_instance
DELETE FROM instance WHERE id = :id;

-- name: release_orphan_leases
UPDATE task SET due_at = :now, lease_owner = NULL, lease_token = NULL
WHERE lease_owner IS NOT NULL AND lease_owner NOT IN (SELECT id FROM instance);

-- name: release_instance_leases
UPDATE task SET due_at = :now, lease_owner = NULL, lease_token = NULL
WHERE lease_owner = :id;

-- name: claim_due_tasks
-- The due tasks as one JSON row (the payload in hex): the writer thread gives up
-- and retakes the GIL once per row it steps, and beside a busy loop each retake is
-- a wait (a RETURNING of 500 rows took 25-30 ms in the server, this takes one step).
-- attempts is as lease_claimed leaves it.
SELECT json_group_array(json_array(id, hex(payload), retry_count, retry_limit, attempts + 1,
    estimate_execution_at, estimate_next_retry_at, due_at))
FROM (SELECT * FROM task WHERE due_at <= :now ORDER BY due_at LIMIT :limit);

-- name: lease_claimed
-- :ids is the JSON array of the ids claim_due_tasks returned, in the same transaction
UPDATE task
SET due_at = :now + lease_ms, lease_owner = :instance_id, lease_token = :token,
    attempts = attempts + 1
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: next_due_at
SELECT MIN(due_at) FROM task WHERE due_at IS NOT NULL;

-- name: record_attempts
-- {rows} is one "(?, ...)" per outcome, the fields of model.records.AttemptRecord in
-- order. One statement for a whole batch: the writer thread gives up and retakes
-- the GIL once per statement, and beside a busy loop each retake is a wait.
UPDATE task
SET state = v.state, status_code = v.status_code, response = v.response, error = v.error,
    retry_count = v.retry_count, estimate_next_retry_at = v.estimate_next_retry_at,
    estimate_end_at = v.estimate_end_at, due_at = v.due_at,
    lease_owner = NULL, lease_token = NULL
FROM (
    SELECT column1 AS id, column2 AS lease_token, column3 AS state, column4 AS status_code,
        column5 AS response, column6 AS error, column7 AS retry_count,
        column8 AS estimate_next_retry_at, column9 AS estimate_end_at, column10 AS due_at
    FROM (VALUES {rows})
) AS v
WHERE task.id = v.id AND task.lease_token = v.lease_token
RETURNING owner_id, state;

-- name: count_finished
-- :tasks of an owner's outcomes ended in :state (SUCCESS or ERROR): out of the queue and
-- of RUNNING (the triggers leave outcomes to this, one statement per owner and state)
UPDATE owner SET tasks_in_queue = tasks_in_queue - :tasks WHERE id = :owner_id;

-- name: count_finished_states
UPDATE task_count SET tasks = tasks - :tasks WHERE owner_id = :owner_id AND state = 'RUNNING';

-- name: count_finished_state
INSERT INTO task_count (owner_id, state, tasks) VALUES (:owner_id, :state, :tasks)
ON CONFLICT (owner_id, state) DO UPDATE SET tasks = tasks + :tasks;

-- name: insert_attempts
-- {rows} is one "(?, ...)" per attempt, the fields of model.records.AttemptLog in
-- order; an attempt of a task deleted meanwhile is left out, one written already is kept.
INSERT OR IGNORE INTO attempt
SELECT v.* FROM (VALUES {rows}) AS v WHERE EXISTS (SELECT 1 FROM task WHERE id = v.column1);

-- name: trim_attempts
-- all but the newest ATTEMPT_HISTORY of a task's attempts
DELETE FROM attempt WHERE task_id = ? AND number <= ?;

-- name: list_attempts
SELECT task_id, number, due_at, started_at, ended_at, status_code, error, response_bytes,
    http_version, remote_address, dns_ms, connect_ms, tls_ms, first_byte_ms, total_ms
FROM attempt WHERE task_id = :task_id AND number < :before
ORDER BY number DESC LIMIT :limit;

-- name: state_totals
SELECT state, sum(tasks) FROM task_count GROUP BY state;

-- name: due_backlog
SELECT count(*), min(due_at) FROM task WHERE due_at <= :now;

-- name: last_backup
SELECT max(finished_at) FROM backup_run WHERE state = 'DONE';

-- name: in_flight_by_instance
SELECT lease_owner, count(*) FROM task WHERE lease_owner IS NOT NULL GROUP BY lease_owner;

-- name: recent_backups
SELECT tick, instance_id, state, started_at, finished_at, location, size, error
FROM backup_run ORDER BY tick DESC LIMIT :limit;

-- name: hostless_tasks
-- rows written before target_host existed, in id order past :after
SELECT id, payload FROM task WHERE target_host = '' AND id > :after ORDER BY id LIMIT :limit;

-- name: set_target_host
UPDATE task SET target_host = ? WHERE id = ?;

-- name: count_tasks
SELECT state, tasks FROM task_count WHERE owner_id = :owner_id;

-- name: sealed_attempt_errors
-- key rotation: the sealed errors of the attempts of the tasks in the JSON array :ids
SELECT task_id, number, error FROM attempt
WHERE task_id IN (SELECT value FROM json_each(:ids)) AND error IS NOT NULL;

-- name: reseal_attempt_error
UPDATE attempt SET error = ? WHERE task_id = ? AND number = ?;

-- name: sealed_batch
-- key rotation: the sealed columns of model.records.SealedColumns, in id order
SELECT id, payload, metadata, response, error FROM task
WHERE id > :after ORDER BY id LIMIT :limit;

-- name: reseal_task
-- the host's digest was made with the old key: the next server start makes it again
UPDATE task
SET payload = :payload, metadata = :metadata, response = :response, error = :error,
    target_host = ''
WHERE id = :id;

-- name: running_backups
SELECT tick, instance_id FROM backup_run WHERE state = 'RUNNING' AND tick <> :tick;

-- name: claim_tick
INSERT INTO backup_run (tick, instance_id, state, started_at)
VALUES (:tick, :instance_id, 'RUNNING', :now)
ON CONFLICT (tick) DO NOTHING;

-- name: finish_tick
UPDATE backup_run
SET state = :state, finished_at = :now, location = :location, size = :size, error = :error
WHERE tick = :tick AND instance_id = :instance_id;

-- name: prune_runs
DELETE FROM backup_run WHERE tick < (
    SELECT tick FROM backup_run ORDER BY tick DESC LIMIT 1 OFFSET :keep
);

-- name: purge_finished
-- retention: up to :limit tasks that finished before :before, oldest first
DELETE FROM task WHERE id IN (
    SELECT id FROM task
    WHERE due_at IS NULL AND state IN ('SUCCESS', 'ERROR', 'REVOKED') AND estimate_end_at < :before
    ORDER BY estimate_end_at LIMIT :limit
);
