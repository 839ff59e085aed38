"""Signals between nodes: NOTIFY in the transaction of each change, LISTEN on a connection
of its own, reconnected when it is lost (after which the schedulers look again, since
what was said meanwhile is gone)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from contextlib import suppress

import asyncpg

from tasks_server.store.base import StoreUnavailable, TaskSignal
from tasks_server.store.signals import decode_signal, encode_signal

log = logging.getLogger(__name__)

RECONNECT_S = 0.5
CONNECT_TIMEOUT_S = 10.0
# a lost LISTEN connection: what the other nodes announced meanwhile is gone, so look again
LOOK_AGAIN = TaskSignal("", due_at=0)
# what starts an announcement that an owner's key changed or the owner was deleted
_OWNER = "owner:"


class Notifications:
    """LISTEN on `channel`, telling `heard` what other nodes announce (not our own)."""

    def __init__(
        self,
        url: str,
        channel: str,
        heard: Callable[[TaskSignal], None],
        owner_changed: Callable[[str], None],
    ) -> None:
        self._url = url
        self.channel = channel
        self._heard = heard
        self._owner_changed = owner_changed
        self._node = secrets.token_hex(6)  # tells this store's own announcements apart
        # what each announcement starts with (the statement of registrations builds its own)
        self.prefix = f"{self._node}|"
        self._task: asyncio.Task[None] | None = None
        # False from a lost connection until the next one listens: nothing is heard then
        self.listening = False

    async def start(self) -> None:
        """Listen from now on; StoreUnavailable when the first connection fails."""
        first = await self._connect()
        self.listening = True
        self._task = asyncio.create_task(self._keep_listening(first), name="pg-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def notify(
        self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, signal: TaskSignal
    ) -> None:
        """Announce `signal` in `conn`'s transaction: delivered only if it commits."""
        payload = f"{self.prefix}{encode_signal(signal)}"
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)

    async def notify_owner_changed(
        self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, owner_id: str
    ) -> None:
        """Announce, in `conn`'s transaction, that the owner's key changed or it is gone."""
        payload = f"{self.prefix}{_OWNER}{owner_id}"
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        node, _, said = str(payload).partition("|")
        if node == self._node:  # our own were told to our subscribers when they committed
            return
        if said.startswith(_OWNER):
            self._owner_changed(said.removeprefix(_OWNER))
        else:
            self._heard(decode_signal(said))

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S)
            await conn.add_listener(self.channel, self._on_notification)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot LISTEN on PostgreSQL: {exc}") from None
        return conn

    async def _keep_listening(self, conn: asyncpg.Connection) -> None:
        while True:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _, lost=lost: lost.set())
            try:
                await lost.wait()
            finally:
                self.listening = False
                if not conn.is_closed():
                    await conn.close()
            log.warning("The LISTEN connection to PostgreSQL was lost; reconnecting")
            while True:
                await asyncio.sleep(RECONNECT_S)
                try:
                    conn = await self._connect()
                except StoreUnavailable:
                    continue
                break
            self.listening = True
            self._heard(LOOK_AGAIN)
