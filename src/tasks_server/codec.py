"""Sealed forms of what a task stores: its canonical payload, metadata, last response and error."""

from __future__ import annotations

import msgspec

from tasks_server.crypto import Cipher
from tasks_server.model.spec import TaskSpec

_spec_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(TaskSpec)
_metadata_decoder = msgspec.msgpack.Decoder(dict[str, str])
SEALED_COLUMNS = ("payload", "metadata", "response", "error")  # of the task table


def _context(task_id: str, column: str) -> str:
    """What a sealed value is bound to: its task and its column (the payload: the task id)."""
    return task_id if column == "payload" else f"{task_id}:{column}"


class TaskCodec:
    """Encrypts each stored value bound to its task id and column."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher

    def seal_spec(self, task_id: str, spec: TaskSpec) -> bytes:
        # metadata is kept in its own column: it is read by every list, the request is not
        body = msgspec.structs.replace(spec, metadata=None)
        return self._cipher.seal(_spec_encoder.encode(body), _context(task_id, "payload"))

    def index_host(self, host: str) -> str:
        # the target's host is part of the sealed request: only a keyed digest is stored
        return self._cipher.index(host)

    def host_indexes(self, host: str) -> list[str]:
        return self._cipher.indexes(host)

    def open_spec(self, task_id: str, sealed: bytes) -> TaskSpec:
        return _spec_decoder.decode(self._cipher.open(sealed, _context(task_id, "payload")))

    def seal_metadata(self, task_id: str, metadata: dict[str, str] | None) -> bytes | None:
        if metadata is None:
            return None
        return self._cipher.seal(_spec_encoder.encode(metadata), _context(task_id, "metadata"))

    def open_metadata(self, task_id: str, sealed: bytes | None) -> dict[str, str] | None:
        if sealed is None:
            return None
        return _metadata_decoder.decode(self._cipher.open(sealed, _context(task_id, "metadata")))

    def seal_response(self, task_id: str, body: bytes | None) -> bytes | None:
        if body is None:
            return None
        return self._cipher.seal(body, _context(task_id, "response"))

    def open_response(self, task_id: str, sealed: bytes | None) -> bytes | None:
        if sealed is None:
            return None
        return self._cipher.open(sealed, _context(task_id, "response"))

    def seal_error(self, task_id: str, error: str | None) -> bytes | None:
        # libcurl's messages name the target host, which is part of the sealed request
        if error is None:
            return None
        return self._cipher.seal(error.encode(), _context(task_id, "error"))

    def open_error(self, task_id: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        return self._cipher.open(sealed, _context(task_id, "error")).decode()

    def reseal(self, task_id: str, column: str, sealed: bytes | None) -> bytes | None:
        """The value of a sealed column (SEALED_COLUMNS) sealed with the current key; None
        when it already is (or is NULL). DecryptionError when no configured key opens it."""
        if sealed is None:
            return None
        return self._cipher.reseal(sealed, _context(task_id, column))
