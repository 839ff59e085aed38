"""Which server instances are alive: the one rule every store and tool applies.

An instance is a scheduler (one per server process) registered in the
database, heart-beating every second. It is alive while its heartbeat is
younger than INSTANCE_STALE_MS and, when it runs on this host, its process
exists. A process of this host holding our own pid is ourselves: it is alive
if this process registered that instance (a server running in this very
process), and otherwise a predecessor whose pid was reused (a container
restarted), so gone.
"""

from __future__ import annotations

import os
import socket

from tasks_server.model.records import InstanceRow

HOST = socket.gethostname()
_started_here: set[str] = set()  # instances registered by this process


def note_started_here(instance_id: str, host: str, pid: int) -> None:
    """Called as an instance is registered, so the rule knows the ones of this process."""
    if host == HOST and pid == os.getpid():
        _started_here.add(instance_id)


def is_alive(instance: InstanceRow, now: int, stale_ms: int) -> bool:
    if instance.heartbeat_at < now - stale_ms:
        return False
    if instance.host != HOST:
        return True  # its heartbeat is all that can be seen of another host
    if instance.pid == os.getpid():
        return instance.id in _started_here
    return process_exists(instance.pid)


def describe(instance: InstanceRow) -> str:
    return f"pid {instance.pid} on {instance.host}"


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs on this host (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
