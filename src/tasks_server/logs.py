"""What the process writes to stdout: one line per event, as text or as JSON.

Times are ISO 8601 in UTC with milliseconds (2026-12-07T05:55:52.138Z). The start and
stop lines always print; LOG=1 adds a line per attempt; LOG_ACCESS=1 adds uvicorn's
access log. With LOG_FORMAT=json every line, ours and uvicorn's, is one JSON object
with `time`, `level`, `message` and the line's own fields.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

# start and stop: printed whatever LOG says
LIFECYCLE = "tasks_server.lifecycle"
# the attributes every LogRecord has; any other attribute is a field the line carries
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colours
    "taskName",
}


def iso_time(created: float) -> str:
    """`created` (seconds since the epoch) as 2026-12-07T05:55:52.138Z."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created * 1000) % 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def configure_logging(*, verbose: bool, json: bool = False, access: bool = False) -> None:
    """Every logger of the process (ours, uvicorn's, the libraries') to one stdout handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tasks_server").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(LIFECYCLE).setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access else logging.WARNING)
