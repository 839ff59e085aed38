"""Backups of the SQLite database: consistent snapshots, kept on local disk or in any
S3-compatible object storage, taken on a cron schedule, with retention and restore.

A backup is a snapshot taken with SQLite's online backup API (one read
transaction: a consistent database while the server keeps writing), gzipped,
optionally encrypted (AES-256-GCM in 1 MiB chunks, key derived from
CIPHER_KEY), and described by a sidecar `<name>.json` (LOCAL) or the object's
metadata (OBJECT_STORAGE): schema version, task count, SHA-256 of the archive
and of the database. Restore verifies all of that and `PRAGMA integrity_check`
before it replaces anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import msgspec
from croniter import croniter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tasks_server.config import Settings
from tasks_server.crypto import KEY_FILE_NAME, Cipher, DecryptionError, fsync_dir
from tasks_server.store import queries
from tasks_server.store.migrations import pending
from tasks_server.store.sqlite import process_exists

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("tasks_server")

CHUNK = 1 << 20  # bytes read, compressed and sealed at a time
PART_SIZE = 8 << 20  # multipart upload above this size, in parts of this size
KEEP_RUNS = 1000  # rows of backup_run kept (one per tick)
MAX_SLEEP_S = 60.0  # the schedule looks at the wall clock at least this often
_MAGIC = b"TSBKENC1"  # first bytes of an encrypted archive
_SALT_BYTES = 16
_PREFIX_BYTES = 7  # nonce = prefix + 4-byte chunk counter + 1-byte "last chunk" flag
_TAG_BYTES = 16
_STAMP = "%Y%m%dT%H%M%SZ"
_Q = queries.load("sqlite_backup", {})


class BackupError(Exception):
    """A backup, listing or restore cannot be done; the message says why, for a person."""


class BackupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a backup holds: its sidecar JSON (LOCAL) or its object metadata."""

    name: str
    created_at: int  # ms since the epoch, UTC
    size: int  # bytes of the archive as stored
    sha256: str  # of the archive as stored
    database_sha256: str  # of the database inside
    schema_version: int
    task_count: int
    encrypted: bool


class StoredBackup(msgspec.Struct, frozen=True, kw_only=True):
    """A backup found in a target; `info` is None when its sidecar is missing."""

    name: str
    location: str
    size: int
    info: BackupInfo | None


class BackupResult(msgspec.Struct, frozen=True, kw_only=True):
    info: BackupInfo
    location: str
    removed: list[str]  # names deleted by retention
    seconds: float


class RestoreResult(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    database: str
    previous: str | None  # where the replaced database was kept
    schema_version: int
    task_count: int
    key_checked: bool  # a task payload was opened with the configured CIPHER_KEY


class Progress(Protocol):
    """Told how far a long step is: `done` of `total` bytes of the step `phase`."""

    def __call__(self, phase: str, done: int, total: int) -> None: ...


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


# ---- names ----


def backup_stem(settings: Settings) -> str:
    """Backup names start with the database file name without `.db`: `tasks` by default."""
    return Path(settings.path_sqlite).stem


def backup_name(stem: str, at_ms: int, encrypted: bool, n: int = 0) -> str:
    """`tasks-20250125T040752Z.db.gz`; `-n` after the time when that second is taken."""
    suffix = f"-{n}" if n else ""
    return f"{stem}-{_stamp(at_ms)}{suffix}.db.gz{'.enc' if encrypted else ''}"


def _stamp(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime(_STAMP)


def _name_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(stem)}-(\d{{8}}T\d{{6}}Z)(?:-(\d+))?\.db\.gz(?:\.enc)?$")


def _newest_first(stem: str, names: Iterable[str]) -> list[str]:
    pattern = _name_pattern(stem)
    keyed = []
    for name in names:
        found = pattern.match(name)
        if found:
            keyed.append(((found.group(1), int(found.group(2) or 0)), name))
    return [name for _, name in sorted(keyed, reverse=True)]


# ---- snapshot, archive ----


class _Facts(msgspec.Struct, frozen=True):
    schema_version: int
    task_count: int


def take_snapshot(database: Path, into: Path) -> _Facts:
    """Copy `database` into the new file `into` in one read transaction (a consistent
    database even while the server writes), as a single file (no WAL)."""
    with (
        closing(sqlite3.connect(database, timeout=30)) as source,
        closing(sqlite3.connect(into)) as copy,
    ):
        source.backup(copy, pages=-1)  # all pages in one step: no restart on writes
        copy.execute("PRAGMA journal_mode = DELETE")
        return _read_facts(copy)


def _read_facts(conn: sqlite3.Connection) -> _Facts:
    try:
        version = conn.execute(_Q["schema_version"]).fetchone()[0]
        count = conn.execute(_Q["task_count"]).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"not a Tasks Server database ({exc})") from None
    return _Facts(int(version or 0), int(count))


def _read_file(path: Path, progress: Progress = _no_progress, phase: str = "") -> Iterator[bytes]:
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
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"tasks-server backup v1"
    ).derive(secret.encode())
    return AESGCM(key)


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


def _write_chunks(chunks: Iterable[bytes], path: Path) -> tuple[int, str]:
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


def sha256_file(path: Path, progress: Progress = _no_progress) -> str:
    digest = hashlib.sha256()
    for chunk in _read_file(path, progress, "verify"):
        digest.update(chunk)
    return digest.hexdigest()


def pack(snapshot: Path, archive: Path, secret: str | None) -> tuple[int, str]:
    """gzip (and encrypt, with a secret) `snapshot` into `archive`; (size, sha256)."""
    chunks = _gzip(_read_file(snapshot))
    if secret is not None:
        chunks = _encrypt(chunks, secret)
    return _write_chunks(chunks, archive)


def unpack(
    archive: Path, database: Path, secret: str | None, progress: Progress = _no_progress
) -> str:
    """Decrypt if needed and gunzip `archive` into `database`; the database's SHA-256."""
    chunks = _read_file(archive, progress, "unpack")
    if _is_encrypted(archive):
        chunks = _decrypt(chunks, secret)
    return _write_chunks(_gunzip(chunks), database)[1]


# ---- targets ----


class Target(Protocol):
    """Where backups are kept."""

    def describe(self) -> str: ...

    def publish(self, archive: Path, info: BackupInfo) -> tuple[str, BackupInfo]:
        """Store `archive` under `info.name` (or the next free name); (location, info)."""
        ...

    def entries(self) -> list[StoredBackup]:
        """This database's backups, newest first."""
        ...

    def delete(self, names: list[str]) -> None: ...

    def fetch(
        self, source: str, workdir: Path, progress: Progress
    ) -> tuple[Path, str, BackupInfo | None]:
        """The archive named or keyed `source` as a local file; (path, location, info)."""
        ...


def _sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".json")


def read_sidecar(archive: Path) -> BackupInfo | None:
    """The sidecar of a local archive, or None when there is none."""
    path = _sidecar(archive)
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=BackupInfo)
    except msgspec.DecodeError as exc:
        raise BackupError(f"the sidecar {path} is unreadable: {exc}") from None


class LocalTarget:
    """A directory (BACKUP_PATH_DIR_SQLITE): `<name>` and its sidecar `<name>.json`."""

    def __init__(self, settings: Settings) -> None:
        self._dir = settings.backup_dir
        self._stem = backup_stem(settings)

    def describe(self) -> str:
        return str(self._dir)

    def publish(self, archive: Path, info: BackupInfo) -> tuple[str, BackupInfo]:
        self._dir.mkdir(parents=True, exist_ok=True)
        staged = self._dir / f".{info.name}.{os.getpid()}.tmp"
        try:
            os.replace(archive, staged)
        except OSError:  # another file system
            _write_chunks(_read_file(archive), staged)
        try:
            for n in range(1000):
                name = backup_name(self._stem, info.created_at, info.encrypted, n)
                try:
                    os.link(staged, self._dir / name)  # fails if taken: never overwrites
                except FileExistsError:
                    continue
                break
            else:
                raise BackupError(f"no free backup name in {self._dir}")
        finally:
            staged.unlink(missing_ok=True)
        info = msgspec.structs.replace(info, name=name)
        sidecar = _sidecar(self._dir / name)
        staged_sidecar = sidecar.with_name(f".{sidecar.name}.tmp")
        _write_chunks([msgspec.json.format(msgspec.json.encode(info))], staged_sidecar)
        os.replace(staged_sidecar, sidecar)
        fsync_dir(self._dir)
        return str(self._dir / name), info

    def entries(self) -> list[StoredBackup]:
        if not self._dir.is_dir():
            return []
        names = _newest_first(self._stem, (entry.name for entry in self._dir.iterdir()))
        found = []
        for name in names:
            path = self._dir / name
            found.append(
                StoredBackup(
                    name=name, location=str(path), size=path.stat().st_size, info=read_sidecar(path)
                )
            )
        return found

    def delete(self, names: list[str]) -> None:
        for name in names:
            (self._dir / name).unlink(missing_ok=True)
            _sidecar(self._dir / name).unlink(missing_ok=True)

    def fetch(
        self, source: str, workdir: Path, progress: Progress
    ) -> tuple[Path, str, BackupInfo | None]:
        path = Path(source)
        if not path.is_file():
            path = self._dir / source
        if not path.is_file():
            raise BackupError(f"no backup file {source} (nor {self._dir / source})")
        return path, str(path), read_sidecar(path)


# S3 error codes -> what to tell the person; {bucket}, {endpoint}, {key} filled in.
S3_ERRORS: dict[str, str] = {
    "NoSuchBucket": "the bucket {bucket!r} does not exist at {endpoint} "
    "(BACKUP_OBJECT_STORAGE_BUCKET_NAME)",
    "InvalidBucketName": "{bucket!r} is not a valid bucket name "
    "(BACKUP_OBJECT_STORAGE_BUCKET_NAME)",
    "InvalidAccessKeyId": "the object storage at {endpoint} does not know this access key "
    "(BACKUP_OBJECT_STORAGE_ACCESS_KEY)",
    "SignatureDoesNotMatch": "the object storage at {endpoint} refused the secret key "
    "(BACKUP_OBJECT_STORAGE_SECRET_KEY)",
    "AccessDenied": "access to the bucket {bucket!r} at {endpoint} was denied: "
    "check the credentials and their permissions",
    "InvalidToken": "the session token was refused (S3_SESSION_TOKEN / AWS_SESSION_TOKEN)",
    "ExpiredToken": "the session token has expired (S3_SESSION_TOKEN / AWS_SESSION_TOKEN)",
    "NoSuchKey": "no object {key!r} in the bucket {bucket!r}",
    "404": "no object {key!r} in the bucket {bucket!r}",
    "403": "access to {key!r} in the bucket {bucket!r} was denied: "
    "check the credentials and their permissions",
}


class ObjectStorageTarget:
    """A bucket of any S3-compatible service; keys `<BACKUP_OBJECT_STORAGE_PATH>/<name>`."""

    def __init__(self, settings: Settings, part_size: int = PART_SIZE) -> None:
        import boto3  # here: a server backing up LOCAL never loads boto3 (~0.2 s)
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self._bucket = settings.backup_object_storage_bucket_name
        self._prefix = settings.backup_object_storage_path.strip("/")
        self._endpoint = settings.backup_object_storage_endpoint or "AWS S3"
        self._stem = backup_stem(settings)
        config = Config(
            s3={
                "addressing_style": "path" if settings.backup_object_storage_path_style else "auto"
            },
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            # many S3-compatible services reject the CRC headers boto3 now sends by default
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.backup_object_storage_endpoint or None,
            aws_access_key_id=settings.backup_object_storage_access_key or None,
            aws_secret_access_key=settings.backup_object_storage_secret_key or None,
            aws_session_token=settings.s3_session_token or None,
            region_name=settings.s3_region or "us-east-1",
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size
        )

    def describe(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def _key(self, name: str) -> str:
        return f"{self._prefix}/{name}" if self._prefix else name

    @contextmanager
    def _errors(self, key: str = "") -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            template = S3_ERRORS.get(code)
            if template is None:
                raise BackupError(f"the object storage at {self._endpoint} said: {exc}") from None
            message = template.format(bucket=self._bucket, endpoint=self._endpoint, key=key)
            raise BackupError(message) from None
        except NoCredentialsError:
            raise BackupError(
                "no object storage credentials: set BACKUP_OBJECT_STORAGE_ACCESS_KEY "
                "and BACKUP_OBJECT_STORAGE_SECRET_KEY"
            ) from None
        except BotoCoreError as exc:
            raise BackupError(
                f"the object storage at {self._endpoint} (BACKUP_OBJECT_STORAGE_ENDPOINT): {exc}"
            ) from None

    def _check_bucket(self) -> None:
        # a GET, so that the answer names its error (a HEAD would only say 403 or 404)
        with self._errors():
            self._client.list_objects_v2(Bucket=self._bucket, MaxKeys=1)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._errors(key):
            try:
                self._client.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                    return False
                raise
        return True

    def publish(self, archive: Path, info: BackupInfo) -> tuple[str, BackupInfo]:
        self._check_bucket()
        n = 0
        while self._exists(self._key(backup_name(self._stem, info.created_at, info.encrypted, n))):
            n += 1
        info = msgspec.structs.replace(
            info, name=backup_name(self._stem, info.created_at, info.encrypted, n)
        )
        key = self._key(info.name)
        extra = {
            "Metadata": _to_metadata(info),
            "ContentType": "application/octet-stream" if info.encrypted else "application/gzip",
        }
        with self._errors(key):
            self._client.upload_file(
                str(archive), self._bucket, key, ExtraArgs=extra, Config=self._transfer
            )
        return f"s3://{self._bucket}/{key}", info

    def entries(self) -> list[StoredBackup]:
        self._check_bucket()
        sizes: dict[str, int] = {}
        listing_prefix = f"{self._prefix}/" if self._prefix else ""
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=listing_prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    sizes[item["Key"][len(listing_prefix) :]] = item["Size"]
        found = []
        for name in _newest_first(self._stem, sizes):
            key = self._key(name)
            with self._errors(key):
                head = self._client.head_object(Bucket=self._bucket, Key=key)
            found.append(
                StoredBackup(
                    name=name,
                    location=f"s3://{self._bucket}/{key}",
                    size=sizes[name],
                    info=_from_metadata(name, sizes[name], head["Metadata"]),
                )
            )
        return found

    def delete(self, names: list[str]) -> None:
        if not names:
            return
        with self._errors():
            self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._key(name)} for name in names], "Quiet": True},
            )

    def fetch(
        self, source: str, workdir: Path, progress: Progress
    ) -> tuple[Path, str, BackupInfo | None]:
        self._check_bucket()
        key = source
        if self._prefix and not source.startswith(f"{self._prefix}/"):
            key = self._key(source)
        if not self._exists(key) and self._exists(source):
            key = source  # a key outside the prefix, given whole
        with self._errors(key):
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        name = key.rsplit("/", 1)[-1]
        size = head["ContentLength"]
        path = workdir / name
        done = 0

        def advance(amount: int) -> None:
            nonlocal done
            done += amount
            progress("download", done, size)

        with self._errors(key):
            self._client.download_file(
                self._bucket, key, str(path), Config=self._transfer, Callback=advance
            )
        return path, f"s3://{self._bucket}/{key}", _from_metadata(name, size, head["Metadata"])


_METADATA_FIELDS = ("created_at", "sha256", "database_sha256", "schema_version", "task_count")


def _to_metadata(info: BackupInfo) -> dict[str, str]:
    values = {field.replace("_", "-"): str(getattr(info, field)) for field in _METADATA_FIELDS}
    return {**values, "encrypted": "1" if info.encrypted else "0"}


def _from_metadata(name: str, size: int, metadata: dict[str, str]) -> BackupInfo | None:
    try:
        return BackupInfo(
            name=name,
            size=size,
            created_at=int(metadata["created-at"]),
            sha256=metadata["sha256"],
            database_sha256=metadata["database-sha256"],
            schema_version=int(metadata["schema-version"]),
            task_count=int(metadata["task-count"]),
            encrypted=metadata["encrypted"] == "1",
        )
    except (KeyError, ValueError):
        return None  # not written by us, or its metadata was stripped


TARGETS: dict[str, Callable[[Settings], Target]] = {
    "LOCAL": LocalTarget,
    "OBJECT_STORAGE": ObjectStorageTarget,
}


def target_for(settings: Settings) -> Target:
    """The target BACKUP_METHOD_SQLITE names, after checking its settings."""
    if settings.backup_method_sqlite == "OBJECT_STORAGE":
        if not settings.backup_object_storage_bucket_name:
            raise BackupError(
                "BACKUP_METHOD_SQLITE=OBJECT_STORAGE needs BACKUP_OBJECT_STORAGE_BUCKET_NAME"
            )
        if bool(settings.backup_object_storage_access_key) != bool(
            settings.backup_object_storage_secret_key
        ):
            raise BackupError(
                "set both BACKUP_OBJECT_STORAGE_ACCESS_KEY and BACKUP_OBJECT_STORAGE_SECRET_KEY"
            )
    return TARGETS[settings.backup_method_sqlite](settings)


# ---- backup ----


def known_secret(settings: Settings) -> str | None:
    """CIPHER_KEY, or the key file beside the database; None when neither exists."""
    if settings.cipher_key:
        return settings.cipher_key
    path = settings.data_dir / KEY_FILE_NAME
    if path.exists():
        return path.read_text().strip() or None
    return None


def create_backup(settings: Settings, at_ms: int | None = None) -> BackupResult:
    """Take one backup now (named after `at_ms`, default now), store it, apply retention."""
    started = time.monotonic()
    target = target_for(settings)
    secret = known_secret(settings) if settings.backup_encrypt else None
    if settings.backup_encrypt and secret is None:
        raise BackupError("BACKUP_ENCRYPT=1 needs CIPHER_KEY (or the key file beside the database)")
    created_at = at_ms if at_ms is not None else time.time_ns() // 1_000_000
    database = Path(settings.path_sqlite)
    if not database.exists():
        raise BackupError(f"no database at {database}")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=database.parent) as workdir:
        snapshot = Path(workdir) / "snapshot.db"
        facts = take_snapshot(database, snapshot)
        database_sha256 = sha256_file(snapshot)
        archive = Path(workdir) / "archive"
        size, sha256 = pack(snapshot, archive, secret)
        snapshot.unlink()
        info = BackupInfo(
            name=backup_name(backup_stem(settings), created_at, secret is not None),
            created_at=created_at,
            size=size,
            sha256=sha256,
            database_sha256=database_sha256,
            schema_version=facts.schema_version,
            task_count=facts.task_count,
            encrypted=secret is not None,
        )
        location, info = target.publish(archive, info)
    try:
        removed = apply_retention(target, settings.backup_retention)
    except (BackupError, OSError) as exc:
        # the backup itself is safe; the old ones go at the next success
        log.warning("Backup retention failed: %s", exc)
        removed = []
    return BackupResult(
        info=info, location=location, removed=removed, seconds=time.monotonic() - started
    )


def apply_retention(target: Target, keep: int) -> list[str]:
    """Delete all but the `keep` newest backups; the names deleted."""
    old = [found.name for found in target.entries()[keep:]]
    target.delete(old)
    return old


def list_backups(settings: Settings) -> tuple[str, list[StoredBackup]]:
    """(where, backups newest first) for the configured method."""
    target = target_for(settings)
    return target.describe(), target.entries()


# ---- restore ----


def latest_schema_version() -> int:
    return max(version for version, _, _ in pending("sqlite", set()))


def live_servers(conn: sqlite3.Connection, stale_ms: int) -> list[str]:
    """Servers that heart-beat into this database within `stale_ms` (and whose process
    still exists, when they run on this host): how restore knows the database is in use."""
    stale_before = time.time_ns() // 1_000_000 - stale_ms
    try:
        rows = conn.execute(_Q["live_instances"], {"stale_before": stale_before}).fetchall()
    except sqlite3.DatabaseError:
        return []  # no instance table (no server ever ran on it), or not a database at all
    here = socket.gethostname()
    return [
        # our own pid counts here: a server may run in this very process
        f"pid {pid} on {host}"
        for _, host, pid, _ in rows
        if host != here or process_exists(pid)
    ]


def _refuse_if_served(conn: sqlite3.Connection, database: Path, stale_ms: int) -> None:
    servers = live_servers(conn, stale_ms)
    if servers:
        raise BackupError(
            f"{database} is in use by a running server ({', '.join(servers)}): stop it first"
        )


def check_database(path: Path) -> _Facts:
    """Refuse a file that is not a sound Tasks Server database this version can run."""
    with closing(sqlite3.connect(path)) as conn:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"the backup is not a readable SQLite database ({exc})") from None
        if problems != ["ok"]:
            raise BackupError(f"the backup fails PRAGMA integrity_check: {'; '.join(problems[:5])}")
        facts = _read_facts(conn)
    if facts.schema_version > latest_schema_version():
        raise BackupError(
            f"the backup has schema version {facts.schema_version}, newer than this "
            f"Tasks Server knows ({latest_schema_version()}): upgrade it first"
        )
    return facts


def _check_key(path: Path, secret: str | None, previous: tuple[str, ...] = ()) -> bool:
    """Open one task payload with the configured keys; False when there is none to try."""
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(_Q["any_task_payload"]).fetchone()
    if row is None or secret is None:
        return False
    try:
        Cipher(secret, previous).open(row[1], row[0])
    except DecryptionError:
        raise BackupError(
            "the backup's tasks were encrypted with another CIPHER_KEY: set the key they "
            "were written with (in CIPHER_KEY or CIPHER_KEY_PREVIOUS, or put back its "
            "cipher.key file) and restore again"
        ) from None
    return True


def _forget_instances(path: Path) -> None:
    # the servers that were running when the backup was taken are not running on it now
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(_Q["forget_instances"])


def restore_backup(
    settings: Settings,
    source: str,
    *,
    skip_checksum: bool = False,
    progress: Progress = _no_progress,
) -> RestoreResult:
    """Replace the database with the backup `source` (a local file, a name in the backup
    directory, or an object key), after every check passed; the database in place is
    kept as `<name>.before-restore`. Refuses while a server uses the database."""
    database = Path(settings.path_sqlite)
    if database.exists():
        with closing(sqlite3.connect(database)) as conn:
            _refuse_if_served(conn, database, settings.instance_stale_ms)
    database.parent.mkdir(parents=True, exist_ok=True)
    target: Target = LocalTarget(settings)
    if not Path(source).is_file() and settings.backup_method_sqlite == "OBJECT_STORAGE":
        target = target_for(settings)
    secret = known_secret(settings)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=database.parent) as workdir:
        archive, location, info = target.fetch(source, Path(workdir), progress)
        _verify_archive(archive, info, skip_checksum, progress)
        restored = Path(workdir) / "restored.db"
        database_sha256 = unpack(archive, restored, secret, progress)
        if info is not None and database_sha256 != info.database_sha256:
            raise BackupError("the database inside the archive does not match its checksum")
        restored_size = restored.stat().st_size
        progress("check", 0, restored_size)
        facts = check_database(restored)
        key_checked = _check_key(restored, secret, settings.cipher_key_previous)
        progress("check", restored_size, restored_size)
        _forget_instances(restored)
        previous = _swap_in(restored, database, settings.instance_stale_ms)
    return RestoreResult(
        source=location,
        database=str(database),
        previous=str(previous) if previous else None,
        schema_version=facts.schema_version,
        task_count=facts.task_count,
        key_checked=key_checked,
    )


def _verify_archive(
    archive: Path, info: BackupInfo | None, skip_checksum: bool, progress: Progress
) -> None:
    if info is None:
        if not skip_checksum:
            raise BackupError(
                f"{archive.name} has no sidecar (or object metadata) with its checksum: "
                "restore it with --skip-checksum to rely on the gzip CRC and integrity_check"
            )
        return
    size = archive.stat().st_size
    if size != info.size:
        raise BackupError(
            f"{archive.name} is {size} bytes but was written as {info.size}: "
            "it is truncated or corrupt"
        )
    if sha256_file(archive, progress) != info.sha256:
        raise BackupError(f"{archive.name} does not match its SHA-256 checksum: it is corrupt")


def _swap_in(restored: Path, database: Path, stale_ms: int) -> Path | None:
    """Move `restored` into place; the old database becomes `<name>.before-restore`."""
    previous = database.with_name(database.name + ".before-restore")
    if not database.exists():
        _move_side_files(database, previous)  # a WAL without its database would corrupt ours
        os.replace(restored, database)
        fsync_dir(database.parent)
        return None
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as conn:
        _refuse_if_served(conn, database, stale_ms)
        try:
            # leaving WAL needs every other connection closed: a server (or any other
            # program) with the database open makes this fail
            mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            conn.execute("BEGIN EXCLUSIVE")  # and nobody opens it while we swap
        except sqlite3.OperationalError as exc:
            raise BackupError(
                f"{database} is in use ({exc}): stop every server and program using it first"
            ) from None
        except sqlite3.DatabaseError:
            mode = "delete"  # unreadable (maybe why we restore): it is moved aside as it is
        if mode != "delete":
            raise BackupError(f"{database} is in use: its journal mode stays {mode}")
        os.replace(database, previous)
        _move_side_files(database, previous)
        os.replace(restored, database)
        fsync_dir(database.parent)
        if conn.in_transaction:
            conn.execute("COMMIT")
    return previous


def _move_side_files(database: Path, previous: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        side = database.with_name(database.name + suffix)
        if side.exists():
            os.replace(side, previous.with_name(previous.name + suffix))


# ---- schedule ----


def next_tick(pattern: str, time_zone: str, after: float) -> float:
    """The first time (epoch seconds) after `after` that the cron pattern names."""
    start = datetime.fromtimestamp(after, ZoneInfo(time_zone))
    found: float = croniter(pattern, start, second_at_beginning=True).get_next(float)
    return found


def claim_tick(database: Path, tick_ms: int, instance_id: str, stale_ms: int) -> str | None:
    """Claim the tick for this instance, atomically across processes: None when it is
    ours, else why not (another server took it, or a backup still runs in a live one)."""
    now = time.time_ns() // 1_000_000
    with closing(sqlite3.connect(database, timeout=10, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # one claimer at a time, across processes
        try:
            running = conn.execute(
                _Q["running_backup"], {"tick": tick_ms, "stale_before": now - stale_ms}
            ).fetchone()
            if running is not None:
                conn.execute("ROLLBACK")
                return f"the backup of tick {running[0]} is still running in {running[1]}"
            values = {"tick": tick_ms, "instance_id": instance_id, "now": now}
            if conn.execute(_Q["claim_tick"], values).rowcount == 0:
                conn.execute("ROLLBACK")
                return "claimed by another server"
            conn.execute(_Q["prune_runs"], {"keep": KEEP_RUNS})
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return None


def finish_tick(
    database: Path,
    tick_ms: int,
    instance_id: str,
    result: BackupResult | None,
    error: str | None,
) -> None:
    values: dict[str, Any] = {
        "tick": tick_ms,
        "instance_id": instance_id,
        "now": time.time_ns() // 1_000_000,
        "state": "DONE" if result is not None else "FAILED",
        "location": result.location if result else None,
        "size": result.info.size if result else None,
        "error": error,
    }
    with closing(sqlite3.connect(database, timeout=10, isolation_level=None)) as conn:
        conn.execute(_Q["finish_tick"], values)


class BackupSchedule:
    """Backups on BACKUP_CRON_PATTERN_SQLITE inside `serve`: one per tick across every
    server on the database, never two at once, the work in a thread off the loop."""

    def __init__(self, settings: Settings, instance_id: str) -> None:
        self._settings = settings
        self._instance_id = instance_id
        self._database = Path(settings.path_sqlite)
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Future[None] | None = None
        self.succeeded = 0
        self.failed = 0
        self.skipped = 0
        self.last_error: str | None = None
        if settings.backup_enabled:
            target_for(settings)  # bad settings fail the start-up, not the first tick

    async def start(self) -> None:
        """Begin the schedule (a no-op with BACKUP_ENABLED=0)."""
        if not self._settings.backup_enabled:
            return
        self._task = asyncio.create_task(self._run(), name="backup-schedule")
        log.info(
            "Backups on %r (%s) to %s, keeping %d",
            self._settings.backup_cron_pattern_sqlite,
            self._settings.backup_time_zone,
            self._settings.backup_method_sqlite,
            self._settings.backup_retention,
        )

    async def stop(self) -> None:
        """Stop ticking; a backup in progress gets SHUTDOWN_GRACE_MS to finish."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._current is not None and not self._current.done():
            await asyncio.wait([self._current], timeout=self._settings.shutdown_grace_ms / 1000)

    async def _run(self) -> None:
        settings = self._settings
        while True:
            tick = next_tick(
                settings.backup_cron_pattern_sqlite, settings.backup_time_zone, time.time()
            )
            while (remaining := tick - time.time()) > 0:
                await asyncio.sleep(min(remaining, MAX_SLEEP_S))  # follows wall-clock changes
            self._current = _in_daemon_thread(partial(self._run_tick, round(tick * 1000)))
            await asyncio.shield(self._current)

    def _run_tick(self, tick_ms: int) -> None:
        """One tick, in a thread: claim it, back up, record; never raises."""
        try:
            reason = claim_tick(
                self._database, tick_ms, self._instance_id, self._settings.instance_stale_ms
            )
        except Exception as exc:
            self._fail(tick_ms, f"could not claim the tick: {exc}", record=False)
            return
        if reason is not None:
            self.skipped += 1
            log.info("Backup tick %s skipped: %s", _stamp(tick_ms), reason)
            return
        try:
            result = create_backup(self._settings, at_ms=tick_ms)
        except Exception as exc:
            described = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
            self._fail(tick_ms, described)
            return
        self.succeeded += 1
        log.info(
            "Backup done: %s (%d bytes, %d tasks, %.2f s)",
            result.location,
            result.info.size,
            result.info.task_count,
            result.seconds,
        )
        with suppress(Exception):
            finish_tick(self._database, tick_ms, self._instance_id, result, None)

    def _fail(self, tick_ms: int, error: str, record: bool = True) -> None:
        self.failed += 1
        self.last_error = error
        log.error("Backup failed (%d so far; next try at the next tick): %s", self.failed, error)
        if record:
            with suppress(Exception):
                finish_tick(self._database, tick_ms, self._instance_id, None, error)


def _in_daemon_thread(fn: Callable[[], None]) -> asyncio.Future[None]:
    """Run `fn` in a daemon thread (a stop never waits on it past its grace); the future
    is done when `fn` returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not future.done():
            future.set_result(None)

    def run() -> None:
        try:
            fn()
        finally:
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle)

    threading.Thread(target=run, name="backup", daemon=True).start()
    return future
