"""A server shared by the tests of one module (starting one per table case is slow)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Api, Owner, running_api


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, store_kind: str) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("shared"), store_kind) as api:
        yield api


@pytest.fixture
def me(shared: Api) -> Owner:
    """A fresh owner on the shared server."""
    return shared.owner()
