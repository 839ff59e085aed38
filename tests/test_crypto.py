"""Sealing: every nonce is used once, across threads and across a fork."""

from __future__ import annotations

import os
import threading

from tasks_server.crypto import Cipher

NONCE = slice(1, 13)  # after the version byte


def test_a_sealed_value_opens_bound_to_its_context() -> None:
    cipher = Cipher("secret")
    sealed = cipher.seal(b"body", "task-1")
    assert cipher.open(sealed, "task-1") == b"body"


def test_nonces_are_never_repeated_across_threads_and_refills() -> None:
    cipher = Cipher("secret")
    nonces: list[bytes] = []

    def seal_many() -> None:
        mine = [cipher.seal(b"", "t")[NONCE] for _ in range(3000)]
        nonces.extend(mine)

    threads = [threading.Thread(target=seal_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(nonces) == 12_000  # several blocks of 1,024 drawn while threads interleave
    assert len(set(nonces)) == len(nonces)


def test_a_forked_child_never_reuses_the_parents_nonces() -> None:
    cipher = Cipher("secret")
    cipher.seal(b"", "t")  # the parent has a block in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: seal and report its nonces
        os.close(read)
        os.write(write, b"".join(cipher.seal(b"", "t")[NONCE] for _ in range(8)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(cipher.seal(b"", "t")[NONCE] for _ in range(8))
    child_nonces = {child[i : i + 12] for i in range(0, len(child), 12)}
    parent_nonces = {parent[i : i + 12] for i in range(0, len(parent), 12)}
    assert len(child_nonces) == 8
    assert not child_nonces & parent_nonces
