"""Reading a test server's database directly, whichever store it is on."""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
import threading
from typing import Any

import asyncpg

from tasks_server.config import Settings


def rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of `sql` (`?` placeholders) on the database `settings` name."""
    if not settings.database_url:
        with sqlite3.connect(f"file:{settings.path_sqlite}?mode=ro", uri=True) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    numbers = itertools.count(1)
    statement = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
    return _outside_the_loop(settings.database_url, statement, params)


def table_names(settings: Settings) -> list[str]:
    if not settings.database_url:
        return [
            row[0] for row in rows(settings, "SELECT name FROM sqlite_master WHERE type='table'")
        ]
    tables = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return [row[0] for row in rows(settings, tables)]


def _outside_the_loop(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """asyncpg on a thread of its own: a test may be running inside an event loop."""
    found: list[tuple[Any, ...]] = []

    async def fetch() -> None:
        conn = await asyncpg.connect(url)
        try:
            found.extend(tuple(row) for row in await conn.fetch(sql, *params))
        finally:
            await conn.close()

    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(fetch())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return found
