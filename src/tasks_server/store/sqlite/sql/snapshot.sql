-- Statements of snapshot.py, each on a connection of its own to a database file
-- (the live one, a snapshot, or a backup being restored), not the store's.

-- name: list_instances
SELECT id, host, pid, heartbeat_at FROM instance;

-- name: schema_version
SELECT max(version) FROM schema_migration;

-- name: task_count
SELECT count(*) FROM task;

-- name: any_task_payload
SELECT id, payload FROM task LIMIT 1;

-- name: forget_instances
DELETE FROM instance;
