"""Owners kept in memory for authentication: every request reads its owner, which on
PostgreSQL is a round trip that cost a fifth of a registration's time on the loop.

An entry is dropped when the owner's key changes or the owner is deleted: at once on this
node, by NOTIFY on the others, and everything is dropped when the LISTEN connection was
lost (what was announced meanwhile is gone). A read that raced with a change is not kept:
each change moves a generation, and a read stores its row only if none moved meanwhile.
"""

from __future__ import annotations

from tasks_server.model.records import OwnerRow

# a bound on memory whatever the number of owners: past it the cache starts again empty
MAX_OWNERS = 10_000


class OwnerCache:
    def __init__(self) -> None:
        self._owners: dict[str, OwnerRow] = {}
        self.generation = 0

    def get(self, owner_id: str) -> OwnerRow | None:
        return self._owners.get(owner_id)

    def keep(self, owner: OwnerRow, generation: int) -> None:
        """Keep `owner`, read when the generation was `generation`."""
        if generation != self.generation:
            return
        if len(self._owners) >= MAX_OWNERS:
            self._owners.clear()
        self._owners[owner.id] = owner

    def forget(self, owner_id: str | None = None) -> None:
        """Drop one owner, or all of them."""
        self.generation += 1
        if owner_id is None:
            self._owners.clear()
        else:
            self._owners.pop(owner_id, None)
