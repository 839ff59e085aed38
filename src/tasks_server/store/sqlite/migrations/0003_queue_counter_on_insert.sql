-- The owner's queue counter also follows a task entering the queue, so that
-- registering is one INSERT (its limit check in the same statement): the
-- writer then needs no savepoint per registration (see store/sqlite.py).

CREATE TRIGGER task_enters_queue AFTER INSERT ON task
WHEN NEW.state IN ('RUNNING', 'PAUSED')
BEGIN
    UPDATE owner SET tasks_in_queue = tasks_in_queue + 1 WHERE id = NEW.owner_id;
END;
