"""The result of one attempt, and what counts as success."""

from __future__ import annotations

import msgspec

TIMEOUT_STATUS = 408


class AttemptResult(msgspec.Struct, frozen=True):
    """What one HTTP attempt produced.

    `status_code` is the final HTTP status, 0 when no response arrived
    (network, DNS or TLS failure, then `error` says what libcurl said), or
    408 when the attempt ran out of time. `body` is at most the configured
    size; `truncated` says bytes were cut off.
    """

    status_code: int
    body: bytes | None = None
    truncated: bool = False
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.error is None and 0 < self.status_code < 400
