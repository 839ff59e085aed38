-- Statements of key_rotation.py (its own connection, with no server running).

-- name: sealed_batch
SELECT id, payload, metadata, response, error FROM task
WHERE id > :after ORDER BY id LIMIT :limit;

-- name: reseal_task
UPDATE task
SET payload = :payload, metadata = :metadata, response = :response, error = :error
WHERE id = :id;
