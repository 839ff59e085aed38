"""Owner keys: made once, shown once, kept only as a digest."""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64


def new_key() -> str:
    """64 random letters and digits (~380 bits): shown once, stored as a digest."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def key_digest(key: str) -> bytes:
    # a fast hash suffices: the key is random, not a password that could be guessed
    return hashlib.sha256(key.encode()).digest()
