"""Where backups are kept: a local directory, or a bucket of any S3-compatible service."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from tasks_server.backup.archive import read_file, write_chunks
from tasks_server.backup.info import BackupError, BackupInfo, Progress, StoredBackup
from tasks_server.backup.names import backup_name, newest_first
from tasks_server.config import Settings
from tasks_server.files import fsync_dir
from tasks_server.store import open_snapshots

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_SIZE = 8 << 20  # multipart upload above this size, in parts of this size


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
        self._stem = open_snapshots(settings).stem

    def describe(self) -> str:
        return str(self._dir)

    def publish(self, archive: Path, info: BackupInfo) -> tuple[str, BackupInfo]:
        self._dir.mkdir(parents=True, exist_ok=True)
        staged = self._dir / f".{info.name}.{os.getpid()}.tmp"
        try:
            os.replace(archive, staged)
        except OSError:  # another file system
            write_chunks(read_file(archive), staged)
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
        write_chunks([msgspec.json.format(msgspec.json.encode(info))], staged_sidecar)
        os.replace(staged_sidecar, sidecar)
        fsync_dir(self._dir)
        return str(self._dir / name), info

    def entries(self) -> list[StoredBackup]:
        if not self._dir.is_dir():
            return []
        names = newest_first(self._stem, (entry.name for entry in self._dir.iterdir()))
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
        self._stem = open_snapshots(settings).stem
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
        for name in newest_first(self._stem, sizes):
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
