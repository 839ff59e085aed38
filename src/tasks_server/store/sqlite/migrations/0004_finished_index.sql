-- Retention (TASK_RETENTION_DAYS) finds the finished tasks by the time they finished.

CREATE INDEX task_finished ON task(estimate_end_at)
WHERE due_at IS NULL AND state IN ('SUCCESS', 'ERROR', 'REVOKED');
