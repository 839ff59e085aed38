"""Schedule a POST to the receiver in 2 s with TasksClient, wait until it is delivered,
and print the outcome and its attempts.

    .venv/bin/tasks-server serve &            # the server, on port 9420
    .venv/bin/python examples/receiver.py &   # the target, on port 8000
    .venv/bin/python examples/schedule.py

TASKS_URL (http://127.0.0.1:9420) and RECEIVER_URL (http://127.0.0.1:8000/hook) say
where they are. OWNER and KEY: an owner's id and key; without them a new owner is
registered and its key printed (it is shown only once).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
import time

from tasks_server.client import Config, HttpRequest, TasksClient, TasksError

FINISHED = ("SUCCESS", "ERROR", "REVOKED")


def main() -> int:
    tasks_url = os.environ.get("TASKS_URL", "http://127.0.0.1:9420")
    receiver_url = os.environ.get("RECEIVER_URL", "http://127.0.0.1:8000/hook")
    with TasksClient(tasks_url, os.environ.get("OWNER"), os.environ.get("KEY")) as tasks:
        if tasks.owner_id is None:
            owner = tasks.register_owner(f"example-{secrets.token_hex(4)}")
            print(f"Registered owner: OWNER={owner.id} KEY={owner.key}")

        task = tasks.register(
            HttpRequest(url=receiver_url, method="POST", data={"hello": "from schedule.py"}),
            Config(execution_delay=2000, retry=2, retry_interval=1000),
            metadata={"example": "schedule"},
        )
        print(f"Registered task {task.id}: POST {receiver_url} in 2 s")

        deadline = time.monotonic() + 30
        while task.state not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.2)
            task = tasks.get(task.id)

        response = base64.b64decode(task.response).decode() if task.response else None
        print(f"Outcome: {task.state}, HTTP {task.status_code}, response {response!r}")
        for attempt in tasks.attempts(task.id):
            print(
                f"  attempt {attempt.number}: HTTP {attempt.status_code}"
                f" in {attempt.timings.total_ms} ms, error {attempt.error}"
            )
    return 0 if task.state == "SUCCESS" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TasksError as error:  # the server's answer says what to fix
        sys.exit(f"Tasks Server answered {error}")
