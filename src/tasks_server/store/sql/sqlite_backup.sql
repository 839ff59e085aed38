-- Statements of backup.py (its own connection; the store's writer is not involved).

-- name: running_backup
SELECT backup_run.tick, backup_run.instance_id FROM backup_run
JOIN instance ON instance.id = backup_run.instance_id
WHERE backup_run.state = 'RUNNING' AND backup_run.tick <> :tick
    AND instance.heartbeat_at >= :stale_before
LIMIT 1;

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

-- name: live_instances
SELECT id, host, pid, heartbeat_at FROM instance WHERE heartbeat_at >= :stale_before;

-- name: schema_version
SELECT max(version) FROM schema_migration;

-- name: task_count
SELECT count(*) FROM task;

-- name: any_task_payload
SELECT id, payload FROM task LIMIT 1;

-- name: forget_instances
DELETE FROM instance;
