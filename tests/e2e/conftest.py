"""End-to-end tests drive real `tasks-server serve` processes (tests/served.py) on 127.0.0.1."""

from __future__ import annotations

from tests.served import serve

__all__ = ["serve"]
