"""Fixtures of the dispatch tests: a test CA and an HTTPS target whose certificate it issued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.targets import Target, tls_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https(ca: trustme.CA) -> Iterator[Target]:
    """An HTTPS target on 127.0.0.1 with a certificate from `ca`."""
    server = Target(ssl_context=tls_context(ca))
    yield server
    server.close()
