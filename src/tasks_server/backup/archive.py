"""The archive stream: a database file gzipped and, with a secret, encrypted with
AES-256-GCM in 1 MiB chunks (the last flagged, so a cut archive is seen)."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tasks_server.backup.info import BackupError, Progress, no_progress
from tasks_server.crypto import derive_key

CHUNK = 1 << 20  # bytes read, compressed and sealed at a time
_MAGIC = b"TSBKENC1"  # first bytes of an encrypted archive
_SALT_BYTES = 16
_PREFIX_BYTES = 7  # nonce = prefix + 4-byte chunk counter + 1-byte "last chunk" flag
_TAG_BYTES = 16


def read_file(path: Path, progress: Progress = no_progress, phase: str = "") -> Iterator[bytes]:
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            done += len(block)
            progress(phase, done, total)
            yield block


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    for chunk in chunks:
        if out := packer.compress(chunk):
            yield out
    yield packer.flush()


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    unpacker = zlib.decompressobj(31)
    try:
        for chunk in chunks:
            if unpacker.eof:
                raise BackupError("the archive has data after its end: it is not one gzip file")
            if out := unpacker.decompress(chunk):
                yield out
        if tail := unpacker.flush():
            yield tail
    except zlib.error as exc:
        raise BackupError(f"the archive is corrupt: gzip says {exc}") from None
    if not unpacker.eof:
        raise BackupError("the archive is truncated: its gzip stream ends early")
    if unpacker.unused_data:
        raise BackupError("the archive has data after its end: it is not one gzip file")


def _archive_key(secret: str, salt: bytes) -> AESGCM:
    return derive_key(secret, salt=salt, info=b"tasks-server backup v1")


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _encrypt(chunks: Iterable[bytes], secret: str) -> Iterator[bytes]:
    """Header, then sealed chunks of CHUNK bytes; the last is flagged, so a cut is seen."""
    salt, prefix = os.urandom(_SALT_BYTES), os.urandom(_PREFIX_BYTES)
    header = _MAGIC + salt + prefix
    aead = _archive_key(secret, salt)
    yield header
    buffer, counter = b"", 0
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > CHUNK:
            piece, buffer = buffer[:CHUNK], buffer[CHUNK:]
            yield aead.encrypt(_nonce(prefix, counter, False), piece, header)
            counter += 1
    yield aead.encrypt(_nonce(prefix, counter, True), buffer, header)


def _decrypt(chunks: Iterable[bytes], secret: str | None) -> Iterator[bytes]:
    stream = iter(chunks)
    buffer = b""
    header_size = len(_MAGIC) + _SALT_BYTES + _PREFIX_BYTES
    for chunk in stream:
        buffer += chunk
        if len(buffer) >= header_size:
            break
    header, buffer = buffer[:header_size], buffer[header_size:]
    if secret is None:
        raise BackupError("the backup is encrypted: set the CIPHER_KEY it was written with")
    aead = _archive_key(secret, header[len(_MAGIC) : len(_MAGIC) + _SALT_BYTES])
    prefix = header[-_PREFIX_BYTES:]
    sealed_size, counter = CHUNK + _TAG_BYTES, 0

    def open_piece(piece: bytes, last: bool) -> bytes:
        try:
            return aead.decrypt(_nonce(prefix, counter, last), piece, header)
        except InvalidTag:
            raise BackupError(
                "the encrypted archive does not verify: it is truncated or corrupt, "
                "or CIPHER_KEY is not the key it was written with"
            ) from None

    for chunk in stream:
        buffer += chunk
        while len(buffer) > sealed_size:
            piece, buffer = buffer[:sealed_size], buffer[sealed_size:]
            yield open_piece(piece, False)
            counter += 1
    yield open_piece(buffer, True)


def _is_encrypted(archive: Path) -> bool:
    with archive.open("rb") as handle:
        return handle.read(len(_MAGIC)) == _MAGIC


def write_chunks(chunks: Iterable[bytes], path: Path) -> tuple[int, str]:
    """Write, fsync; return the size and the SHA-256 of what was written."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as handle:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return size, digest.hexdigest()


def sha256_file(path: Path, progress: Progress = no_progress) -> str:
    digest = hashlib.sha256()
    for chunk in read_file(path, progress, "verify"):
        digest.update(chunk)
    return digest.hexdigest()


def pack(snapshot: Path, archive: Path, secret: str | None) -> tuple[int, str]:
    """gzip (and encrypt, with a secret) `snapshot` into `archive`; (size, sha256)."""
    chunks = _gzip(read_file(snapshot))
    if secret is not None:
        chunks = _encrypt(chunks, secret)
    return write_chunks(chunks, archive)


def unpack(
    archive: Path, database: Path, secret: str | None, progress: Progress = no_progress
) -> str:
    """Decrypt if needed and gunzip `archive` into `database`; the database's SHA-256."""
    chunks = read_file(archive, progress, "unpack")
    if _is_encrypted(archive):
        chunks = _decrypt(chunks, secret)
    return write_chunks(_gunzip(chunks), database)[1]
