"""What the domain needs of the codec: a task's spec and metadata sealed, and opened."""

from __future__ import annotations

from typing import Protocol

from tasks_server.model.spec import TaskSpec


class TaskSealer(Protocol):
    """Seals (encrypts) a task's values bound to its id; codec.TaskCodec is the one in use."""

    def seal_spec(self, task_id: str, spec: TaskSpec) -> bytes: ...
    def open_spec(self, task_id: str, sealed: bytes) -> TaskSpec: ...
    def seal_metadata(self, task_id: str, metadata: dict[str, str] | None) -> bytes | None: ...
    def open_metadata(self, task_id: str, sealed: bytes | None) -> dict[str, str] | None: ...
    def index_host(self, host: str) -> str:
        """A searchable digest of a target host that cannot be read back."""
