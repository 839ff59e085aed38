"""CLUSTER_MODE=1: `tasks-server serve` as a supervisor of worker processes on one socket
and one database, checked through real processes (found in /proc) and real HTTP."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks_server.crypto import KEY_FILE_NAME
from tests.conftest import Owner
from tests.served import EXECUTABLE, Served, free_port, now_ms
from tests.targets import HoldingTarget, Reply, Target, wait_until

LISTENING = re.compile(r"listening on \S+ \(pid (\d+),")


# ---- processes, from /proc (no psutil here, nor /proc/<pid>/task/*/children) ----


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # an unreaped zombie has stopped


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append(int(entry.name))
    return sorted(found)


def is_worker(pid: int) -> bool:
    return "multiprocessing.spawn" in cmdline(pid)


def tcp_owners(pids: Iterable[int]) -> dict[tuple[int, int], int]:
    """(local port, remote port) -> pid, for the IPv4 TCP sockets that `pids` hold."""
    holders: dict[str, int] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                holders[os.readlink(fd)] = pid
            except OSError:
                continue
    owners = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, inode = (line.split()[i] for i in (1, 2, 9))
        if (holder := holders.get(f"socket:[{inode}]")) is not None:
            owners[(int(local.split(":")[1], 16), int(remote.split(":")[1], 16))] = holder
    return owners


def socket_owner(local_port: int, remote_port: int, pids: Iterable[int]) -> int | None:
    """Which of `pids` holds the TCP socket 127.0.0.1:local_port <-> :remote_port."""
    return tcp_owners(pids).get((local_port, remote_port))


# ---- a cluster under test ----


class Cluster(Served):
    """`tasks-server serve` with CLUSTER_MODE=1: the supervisor is `proc`."""

    def __init__(
        self, tmp: Path, port: int, log_name: str, env: dict[str, str], started: list[Cluster]
    ) -> None:
        self.port = port
        self.seen: set[int] = set()  # every process it was seen to start: killed at the end
        self._started = started
        super().__init__(tmp, port, log_name, {"CLUSTER_MODE": "1", **env})

    def _ready(self) -> bool:
        if self not in self._started:  # known to the fixture from the first poll on
            self._started.append(self)
        return super()._ready()

    def children(self) -> list[int]:
        found = children(self.proc.pid)
        self.seen.update(found)
        return found

    def workers(self) -> list[int]:
        return [pid for pid in self.children() if is_worker(pid) and alive(pid)]

    def listening_pids(self) -> list[int]:
        return [int(pid) for pid in LISTENING.findall(self.log())]

    def wait_listening(self, count: int, timeout: float = 30) -> list[int]:
        """The pids of the first `count` workers to log their "listening on" line."""

        def enough() -> list[int] | None:
            assert self.proc.poll() is None, self.log()
            pids = self.listening_pids()
            return pids if len(pids) >= count else None

        found: list[int] = wait_until(enough, timeout=timeout, interval=0.05)
        return found

    def fresh(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a new connection (landing on any worker)."""
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as client:
            return client.request(method, path, **kwargs)

    def terminate(self) -> None:
        """Stop without a trace: the supervisor frozen (so that it starts no one else),
        its children killed, then itself; and any worker seen before that is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            for pid in self.children():
                os.kill(pid, signal.SIGKILL)
        self.kill()
        for pid in self.seen:
            if alive(pid) and "multiprocessing" in cmdline(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster (MAX_INSTANCES=2 unless given) with extra environment variables;
    every process of it is killed at the end, whatever the test did."""
    port = free_port()
    started: list[Cluster] = []

    def start(**env: str) -> Cluster:
        return Cluster(
            tmp_path, port, f"cluster-{len(started)}.log", {"MAX_INSTANCES": "2", **env}, started
        )

    try:
        yield start
    finally:
        for served in started:
            served.terminate()


def register(served: Cluster, owner: Owner, urls: list[str], **config: Any) -> list[str]:
    """Register one task per URL over a few connections at once; their ids in order."""
    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=10) for _ in range(4)
    ]

    def one(index: int) -> str:
        body = {"httpRequest": {"url": urls[index], "method": "GET"}, "config": config}
        reply = clients[index % len(clients)].post(
            "/v1/queues/register", json=body, headers=owner.headers
        )
        assert reply.status_code == 201, reply.text
        task_id: str = reply.json()["id"]
        return task_id

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(one, range(len(urls))))
    finally:
        for client in clients:
            client.close()


def ids_at(target: Target, path: str) -> list[str]:
    return [a.header("X-Tasks-Queue-Id") or "" for a in target.arrivals_at(path)]


def wait_success(served: Cluster, owner: Owner, ids: list[str], timeout: float = 20) -> None:
    def done() -> bool:
        reply = served.fresh(
            "GET", "/v1/queues", params={"limit": 1000, "state": "SUCCESS"}, headers=owner.headers
        )
        assert reply.status_code == 200, reply.text
        return {t["id"] for t in reply.json()} >= set(ids)

    wait_until(done, timeout=timeout, interval=0.05)


def test_two_workers_share_the_work_and_stop_on_sigterm(
    cluster: Callable[..., Cluster], target: Target
) -> None:
    served = cluster()
    listening = served.wait_listening(2)
    workers = served.workers()
    assert len(workers) == 2, [cmdline(pid) for pid in served.children()]
    assert sorted(listening) == workers  # each worker serves, under its own pid
    assert served.proc.pid not in workers
    # each in a process group of its own: a Ctrl-C reaches the supervisor alone
    assert [os.getpgid(pid) for pid in workers] == workers

    owner = served.owner("cluster-owner")
    urls = [target.url(f"/cb/{i}") for i in range(300)]
    ids = register(served, owner, urls, executionDelay=30)
    arrivals = target.wait_for(300, timeout=30)
    wait_success(served, owner, ids)
    # every task sent once: no claim was taken by both workers
    sent = [a.header("X-Tasks-Queue-Id") or "" for a in target.arrivals]
    assert len(sent) == 300
    assert sorted(sent) == sorted(ids)
    assert sorted(a.path for a in arrivals) == sorted(f"/cb/{i}" for i in range(300))
    # which worker sent them, as far as their connections to the target are still open
    owners = tcp_owners(workers)
    senders = [owners.get((a.client_port, target.port)) for a in arrivals]
    print("arrivals per worker:", {pid: senders.count(pid) for pid in [*workers, None]})

    processes = served.children()  # the workers and the resource tracker
    asked = now_ms()
    assert served.stop(signal.SIGTERM, timeout=20) == 0
    assert now_ms() - asked < 15_000
    assert not [pid for pid in workers if alive(pid)]  # joined by the supervisor
    wait_until(lambda: not [pid for pid in processes if alive(pid)], timeout=5)
    assert served.log().count("Tasks Server stopped") == 2


def test_a_pause_on_either_worker_aborts_the_request_in_flight(
    cluster: Callable[..., Cluster],
) -> None:
    """The worker that takes the pause tells the other: every paused request is aborted,
    whichever worker has it in flight (before, a pause landing on the other worker let
    the request run to completion)."""
    holding = HoldingTarget()
    try:
        served = cluster()
        served.wait_listening(2)
        owner = served.owner("pause-anywhere")
        ids = register(served, owner, [holding.url()] * 12, executionDelay=1)
        wait_until(lambda: len(holding.received) == 12, timeout=20)
        latencies = []
        for task_id in ids:  # each pause on a new connection: on either worker
            paused = served.fresh("PATCH", f"/v1/queues/{task_id}/pause", headers=owner.headers)
            answered = time.monotonic()
            assert paused.status_code == 200, paused.text
            wait_until(lambda task_id=task_id: task_id in holding.hung_up, timeout=5)
            latencies.append(max(0.0, holding.hung_up[task_id] - answered))
        print(f"12 paused requests aborted, after {max(latencies) * 1000:.0f} ms at most")
        assert max(latencies) < 1.0
    finally:
        holding.close()


def test_one_key_file_shared_by_every_worker(
    cluster: Callable[..., Cluster], target: Target, tmp_path: Path
) -> None:
    served = cluster(CIPHER_KEY="")  # empty counts as unset: the key file is used
    served.wait_listening(2)
    workers = served.workers()
    data_dir = tmp_path / "data"
    assert [p.name for p in data_dir.iterdir() if "key" in p.name] == [KEY_FILE_NAME]
    assert (data_dir / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert served.log().count("generated a random key") == 1

    owner = served.owner("key-owner")  # every registration on this one connection
    ids = [
        served.task(owner, target.url(f"/key/{i}"), executionDelay=3_600_000)["id"]
        for i in range(10)
    ]
    # each read on a new connection, until both workers have answered some
    answered: dict[int, int] = {}
    reads = 0
    while len(answered) < 2 or reads < 20:
        assert reads < 300, f"one worker answered every connection: {answered}"
        index = reads % len(ids)
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            conn.request("GET", f"/v1/queues/{ids[index]}/config", headers=owner.headers)
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200, body
            assert httpx.Response(200, content=body).json()["httpRequest"]["url"] == target.url(
                f"/key/{index}"
            )
            pid = socket_owner(served.port, conn.sock.getsockname()[1], workers)
        finally:
            conn.close()
        assert pid is not None
        answered[pid] = answered.get(pid, 0) + 1
        reads += 1
    print("reads per worker:", answered)
    assert served.stop(signal.SIGINT, timeout=20) == 0
    assert served.log().count("Tasks Server stopped") == 2
    assert [p.name for p in data_dir.iterdir() if "key" in p.name] == [KEY_FILE_NAME]


def test_a_killed_worker_is_replaced_and_its_task_sent_again(
    cluster: Callable[..., Cluster], target: Target
) -> None:
    target.script("/slow", Reply(200, b"late", delay=5.0), always=Reply(200, b"again"))
    served = cluster()
    served.wait_listening(2)
    workers = served.workers()
    assert len(workers) == 2
    owner = served.owner("kill-owner")
    slow = served.task(owner, target.url("/slow"), executionDelay=1)
    (first,) = target.wait_for(1, "/slow")
    sender = socket_owner(first.client_port, target.port, workers)
    assert sender is not None, "the worker sending the request was not found"

    os.kill(sender, signal.SIGKILL)
    killed_at = now_ms()
    served.http.close()  # its connection may have been to the killed worker

    def replaced() -> list[int] | None:
        # a new connection is answered at every moment: the sibling serves alone meanwhile
        assert served.fresh("GET", "/status").status_code == 200
        now = served.workers()
        return now if len(now) == 2 and sender not in now else None

    now_workers = wait_until(replaced, timeout=15, interval=0.05)
    (survivor,) = set(workers) - {sender}
    assert survivor in now_workers
    print(f"replacement after {now_ms() - killed_at} ms")
    assert f"Worker {sender} exited (status -9)" in served.log()

    # what the dead worker had in flight is sent again by one of the others, once
    again = target.wait_for(2, "/slow", timeout=15)[1]
    assert again.header("X-Tasks-Queue-Id") == slow["id"]
    print(f"in-flight task sent again after {again.at_ms - killed_at:.0f} ms")
    wait_success(served, owner, [slow["id"]])
    assert ids_at(target, "/slow") == [slow["id"], slow["id"]]

    # tasks registered after the kill: each delivered once
    urls = [target.url(f"/after/{i}") for i in range(40)]
    ids = register(served, owner, urls, executionDelay=30)
    target.wait_for(42, timeout=20)
    wait_success(served, owner, ids)
    assert sorted(a.header("X-Tasks-Queue-Id") or "" for a in target.arrivals[2:]) == sorted(ids)
    assert len(target.arrivals) == 42
    assert served.stop(signal.SIGTERM, timeout=20) == 0


def test_workers_exit_when_the_supervisor_is_killed(cluster: Callable[..., Cluster]) -> None:
    served = cluster()
    served.wait_listening(2)
    processes = served.children()  # the workers and the resource tracker
    assert len([pid for pid in processes if is_worker(pid)]) == 2
    served.kill()  # SIGKILL
    assert served.proc.returncode == -signal.SIGKILL
    wait_until(lambda: not [pid for pid in processes if alive(pid)], timeout=15, interval=0.05)
    assert served.log().count("Tasks Server stopped") == 2  # each stopped gracefully (SIGTERM)

    def port_free() -> bool:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", served.port))
            except OSError:
                return False
            return True

    wait_until(port_free, timeout=5, interval=0.05)  # no process holds the socket any more


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PATH_SQLITE": str(tmp_path / "data" / "tasks.db"),
        "CIPHER_KEY": "e2e-cipher-key",
        "LOG": "1",
        **env,
    }
    return subprocess.run(
        [str(EXECUTABLE), "serve"], env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CLUSTER_MODE", "maybe", "expected 1 or 0"),
        ("MAX_INSTANCES", "-1", "expected an integer >= 0"),
        ("MAX_INSTANCES", "two", "MAX_INSTANCES='two'"),
    ],
)
def test_a_bad_cluster_setting_stops_serve_before_any_worker(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = {"CLUSTER_MODE": "1", "MAX_INSTANCES": "2", "PORT": str(free_port()), variable: value}
    result = run_serve(tmp_path, **env)
    assert result.returncode == 2, result  # click's usage error
    assert f"{variable}={value!r}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "Cluster mode" not in result.stdout
    assert not (tmp_path / "data").exists()  # not even the database was prepared


def test_a_port_in_use_stops_the_cluster_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(tmp_path, CLUSTER_MODE="1", MAX_INSTANCES="2", PORT=str(port))
    assert result.returncode == 1, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Cluster mode" not in result.stdout


def test_a_worker_that_cannot_start_stops_the_cluster(tmp_path: Path) -> None:
    # accepted by the supervisor, refused by each worker's start-up (the backup schedule)
    env = {"CLUSTER_MODE": "1", "MAX_INSTANCES": "2", "PORT": str(free_port())}
    result = run_serve(tmp_path, BACKUP_METHOD_SQLITE="OBJECT_STORAGE", **env)
    # (run_serve returning at all means no worker kept the output pipe open)
    assert result.returncode == 3, result
    assert "needs BACKUP_OBJECT_STORAGE_BUCKET_NAME" in result.stdout  # every line: stdout
    assert "A worker could not start (see above); stopping the cluster" in result.stdout
    assert "listening on" not in result.stdout
    assert "starting another" not in result.stdout  # not restarted in a loop


def test_a_database_that_cannot_be_created_stops_the_cluster_before_any_worker(
    tmp_path: Path,
) -> None:
    env = {"CLUSTER_MODE": "1", "MAX_INSTANCES": "2", "PORT": str(free_port())}
    result = run_serve(tmp_path, PATH_SQLITE="/proc/no-such-dir/tasks.db", **env)
    assert result.returncode == 3, result  # as a single server's start-up failure
    assert "Cannot start: " in result.stdout
    assert "/proc/no-such-dir" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "Cluster mode" not in result.stdout


def test_one_scrape_sees_every_worker(cluster: Callable[..., Cluster], target: Target) -> None:
    """prometheus-client's multiprocess files: each worker counts what it did, and any
    worker's /metrics sums them all (what one worker alone did is less)."""
    served = cluster()
    served.wait_listening(2)
    owner = served.owner("metrics-owner")
    ids = register(served, owner, [target.url(f"/m/{i}") for i in range(200)])
    wait_success(served, owner, ids)

    def totals() -> set[tuple[float, float]]:
        found = set()
        for _ in range(6):  # new connections: both workers answer some of them
            text = served.fresh("GET", "/metrics").text
            values = dict(re.findall(r"^(tasks_\w+_total(?:\{[^}]*\})?) (\S+)$", text, re.M))
            attempts = values.get('tasks_attempts_total{outcome="success",status_class="2xx"}')
            found.add((float(values["tasks_registered_total"]), float(attempts or 0)))
        return found

    assert totals() == {(200.0, 200.0)}
    workers = served.workers()
    served.stop(signal.SIGTERM, timeout=20)
    assert not [pid for pid in workers if alive(pid)]
