"""The engine's epoll set stays right when libcurl's view of a descriptor and the
kernel's differ (a number closed and reused without a REMOVE in between)."""

from __future__ import annotations

import asyncio
import select
import socket

import pycurl
import pytest

from tasks_server.dispatch.engine import CurlEngine
from tests.targets import Target


def test_a_descriptor_reused_without_a_remove_is_watched_again(target: Target) -> None:
    async def scenario() -> None:
        engine = CurlEngine(1 << 20)
        try:
            first = socket.socket()
            fd = first.fileno()
            engine._on_socket(pycurl.POLL_IN, fd, None, None)
            first.close()  # the kernel drops it from the epoll set; libcurl said nothing
            second = socket.socket()
            if second.fileno() != fd:
                second.close()
                pytest.skip("the descriptor number was not reused")
            try:
                engine._on_socket(pycurl.POLL_OUT, fd, None, None)  # modify: not in the set
                assert engine._watched[fd] == select.EPOLLOUT
                del engine._watched[fd]  # and the other way round: in the set, not known
                engine._on_socket(pycurl.POLL_INOUT, fd, None, None)
                assert engine._watched[fd] == select.EPOLLIN | select.EPOLLOUT
                engine._on_socket(pycurl.POLL_REMOVE, fd, None, None)
                assert fd not in engine._watched
            finally:
                second.close()
            # and transfers still run through the same set
            result = await engine.perform([(pycurl.URL, target.url("/after"))])
            assert result.status_code == 200
        finally:
            engine.close()

    asyncio.run(scenario())
