"""Encryption of stored task data: AES-256-GCM with a random nonce, key from HKDF."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tasks_server.files import fsync_dir

log = logging.getLogger(__name__)

_VERSION = b"\x01"
_NONCE_BYTES = 12
_NONCES_PER_DRAW = 1024
KEY_FILE_NAME = "cipher.key"


class DecryptionError(Exception):
    """A stored value cannot be decrypted with the configured key."""


class _Nonces:
    """Random nonces, drawn from the OS 1,024 at a time.

    Every attempt outcome and registration is sealed, and one getrandom()
    each was a twentieth of the dispatch loop's time. The bytes are the same
    CSPRNG's; a lock hands each one out once across threads, and a forked
    child draws its own (it must never reuse the parent's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._discard)

    def take(self) -> bytes:
        with self._lock:
            at = self._at
            if at >= len(self._block):
                self._block, at = os.urandom(_NONCE_BYTES * _NONCES_PER_DRAW), 0
            self._at = at + _NONCE_BYTES
            return self._block[at : at + _NONCE_BYTES]

    def _discard(self) -> None:
        self._lock = threading.Lock()
        self._block, self._at = b"", 0


_nonces = _Nonces()


def derive_key(secret: str, *, salt: bytes, info: bytes) -> AESGCM:
    """The AES-256-GCM key of `secret` for one use (`info`), by HKDF-SHA256.

    Every key the server uses comes from here: the task payloads' (fixed salt)
    and each backup archive's (a random salt per archive).
    """
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret.encode())
    return AESGCM(key)


def _aead(secret: str) -> AESGCM:
    return derive_key(secret, salt=b"tasks-server", info=b"tasks-server payload v1")


def _index_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tasks-server", info=b"index v1")
    return hkdf.derive(secret.encode())


def _digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


class Cipher:
    """Seals bytes bound to a context (the task id), so a row cannot be swapped.

    Seals with `secret` only; opens with `secret`, then each of `previous`
    (CIPHER_KEY_PREVIOUS), so rows written before a key rotation stay readable.
    """

    def __init__(self, secret: str, previous: tuple[str, ...] = ()) -> None:
        self._aead = _aead(secret)
        self._keys = [self._aead, *(_aead(old) for old in previous if old != secret)]
        older = [old for old in previous if old != secret]
        self._index_keys = [_index_key(secret), *(_index_key(old) for old in older)]

    def index(self, value: str) -> str:
        """A keyed digest of `value` (HMAC-SHA256, 128 bits): equal values have equal
        digests, so a column of them can be searched, and none can be read back."""
        return _digest(self._index_keys[0], value)

    def indexes(self, value: str) -> list[str]:
        """The digests of `value` under the current key and each previous one: what rows
        written before a key change hold."""
        return [_digest(key, value) for key in self._index_keys]

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = _nonces.take()
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        return self._open(sealed, context)[0]

    def reseal(self, sealed: bytes, context: str) -> bytes | None:
        """`sealed` sealed anew with the current key, or None when it already uses it."""
        plaintext, current = self._open(sealed, context)
        return None if current else self.seal(plaintext, context)

    def _open(self, sealed: bytes, context: str) -> tuple[bytes, bool]:
        """(plaintext, whether the current key opened it)."""
        if sealed[:1] != _VERSION:
            raise DecryptionError("unknown ciphertext version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        for index, aead in enumerate(self._keys):
            try:
                return aead.decrypt(nonce, body, context.encode()), index == 0
            except InvalidTag:
                continue
        which = "CIPHER_KEY or CIPHER_KEY_PREVIOUS" if len(self._keys) > 1 else "this CIPHER_KEY"
        raise DecryptionError(f"ciphertext does not verify with {which}")


def find_secret(configured: str, data_dir: Path) -> str | None:
    """CIPHER_KEY, or the key file beside the database; None when neither exists (the
    tools that read a database never create a key)."""
    if configured:
        return configured
    path = data_dir / KEY_FILE_NAME
    return (path.read_text().strip() or None) if path.exists() else None


def load_or_create_secret(configured: str, data_dir: Path) -> str:
    """Return CIPHER_KEY, or the key kept beside the database (created on first start)."""
    if configured:
        return configured
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return _read_secret(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    # Written whole to a private temp file, then published with link(), which
    # fails if the key exists: two processes starting together agree on one
    # key, and neither can ever read a half-written (empty) file.
    temp = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_secret(path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(data_dir)
    log.warning(
        "CIPHER_KEY is not set: generated a random key in %s (mode 0600). "
        "Keep this file with the database; tasks cannot be read without it.",
        path,
    )
    return secret


def _read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path} is empty: set CIPHER_KEY or restore the key file")
    return secret
