"""Fault tests drive real `tasks-server serve` processes (the e2e helpers) on 127.0.0.1."""

from __future__ import annotations

from tests.e2e.test_restart import serve

__all__ = ["serve"]
