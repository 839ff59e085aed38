-- A batch of outcomes written by one call, so one round trip and one commit instead of a
-- transaction of eight statements: in a burst the batches are small, and the fixed cost
-- of each statement (the client's and the server's) weighed more than the rows.
--
-- In order: the attempts inserted (those of a task deleted meanwhile left out, one
-- written already kept) and the tasks' histories trimmed below the numbers given; the
-- outcomes written where the lease still holds; then, for tasks that left the queue
-- (SUCCESS, ERROR: out of RUNNING), the count deltas added and their owners locked in id
-- order, as every other writer of owner rows does, before their queue sizes move.
-- Returns how many outcomes were written.
CREATE FUNCTION record_outcomes(
    ids text[], lease_tokens bigint[], states text[], status_codes integer[],
    responses bytea[], errors bytea[], retry_counts integer[],
    estimate_next_retry_ats bigint[], estimate_end_ats bigint[], due_ats bigint[],
    attempts attempt[], trim_ids text[], trim_below integer[], queue_states text[]
) RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    outcomes_written bigint;
    owners text[];
    finished_states text[];
    finished bigint[];
BEGIN
    INSERT INTO attempt SELECT a.* FROM unnest(attempts) AS a
    WHERE EXISTS (SELECT 1 FROM task WHERE task.id = a.task_id)
    ON CONFLICT (task_id, number) DO NOTHING;

    IF cardinality(trim_ids) > 0 THEN
        DELETE FROM attempt USING unnest(trim_ids, trim_below) AS kept(task_id, below)
        WHERE attempt.task_id = kept.task_id AND attempt.number <= kept.below;
    END IF;

    WITH written AS (
        UPDATE task
        SET state = v.state, status_code = v.status_code, response = v.response,
            error = v.error, retry_count = v.retry_count,
            estimate_next_retry_at = v.estimate_next_retry_at,
            estimate_end_at = v.estimate_end_at, due_at = v.due_at,
            lease_owner = NULL, lease_token = NULL
        FROM unnest(ids, lease_tokens, states, status_codes, responses, errors, retry_counts,
                    estimate_next_retry_ats, estimate_end_ats, due_ats)
            AS v(id, lease_token, state, status_code, response, error, retry_count,
                 estimate_next_retry_at, estimate_end_at, due_at)
        WHERE task.id = v.id AND task.lease_token = v.lease_token
        RETURNING task.owner_id, task.state
    ), left_queue AS (
        SELECT owner_id, state, count(*) AS tasks FROM written
        WHERE state <> ALL (queue_states) GROUP BY owner_id, state
    )
    SELECT (SELECT count(*) FROM written), array_agg(owner_id), array_agg(state),
           array_agg(tasks)
    INTO outcomes_written, owners, finished_states, finished
    FROM left_queue;

    IF owners IS NOT NULL THEN
        INSERT INTO task_count (owner_id, state, tasks)
        SELECT * FROM unnest(owners, finished_states, finished)
        UNION ALL
        SELECT f.owner_id, 'RUNNING', -sum(f.tasks)
        FROM unnest(owners, finished) AS f(owner_id, tasks) GROUP BY f.owner_id;

        PERFORM 1 FROM owner WHERE id = ANY (owners) ORDER BY id FOR UPDATE;
        UPDATE owner SET tasks_in_queue = owner.tasks_in_queue - f.tasks
        FROM (SELECT g.owner_id, sum(g.tasks) AS tasks
              FROM unnest(owners, finished) AS g(owner_id, tasks) GROUP BY g.owner_id) AS f
        WHERE owner.id = f.owner_id;
    END IF;
    RETURN outcomes_written;
END $$;
