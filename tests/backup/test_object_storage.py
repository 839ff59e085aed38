"""OBJECT_STORAGE against a real S3 API server (moto) on 127.0.0.1 that checks
signatures: upload with metadata, listing, retention, restore from a key,
multipart transfers, and clear errors for wrong credentials or bucket."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tasks_server.backup.commands import create_backup, list_backups, restore_backup
from tasks_server.backup.info import BackupError
from tasks_server.backup.targets import PART_SIZE
from tasks_server.store.sqlite.migrate import latest_schema_version
from tests.backup.conftest import S3Server, add_filler, make_database, task_ids

BASE_MS = 1_737_778_072_000  # 2025-01-25T04:07:52Z


def test_upload_list_retention_and_restore_from_a_key(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    settings, ids = make_database(tmp_path, tasks=4)
    settings = s3_server.settings(tmp_path, bucket, backup_retention=2)
    results = [create_backup(settings, at_ms=BASE_MS + n * 1000) for n in range(3)]

    keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == [
        "nightly/tasks/tasks-20250125T040753Z.db.gz",
        "nightly/tasks/tasks-20250125T040754Z.db.gz",
    ]  # the oldest was deleted by retention
    assert results[2].removed == ["tasks-20250125T040752Z.db.gz"]
    assert results[2].location == f"s3://{bucket}/nightly/tasks/tasks-20250125T040754Z.db.gz"

    head = s3_server.client().head_object(Bucket=bucket, Key=keys[-1])
    assert head["ContentType"] == "application/gzip"
    assert head["Metadata"]["task-count"] == "4"
    assert head["Metadata"]["sha256"] == results[2].info.sha256
    assert head["Metadata"]["schema-version"] == str(latest_schema_version())

    where, found = list_backups(settings)
    assert where == f"s3://{bucket}/nightly/tasks"
    assert [entry.name for entry in found] == [
        "tasks-20250125T040754Z.db.gz",
        "tasks-20250125T040753Z.db.gz",
    ]
    assert found[0].info == results[2].info

    Path(settings.path_sqlite).unlink()  # the disaster
    result = restore_backup(settings, "nightly/tasks/tasks-20250125T040753Z.db.gz")
    assert result.source == f"s3://{bucket}/nightly/tasks/tasks-20250125T040753Z.db.gz"
    assert task_ids(settings.path_sqlite) == ids
    restore_backup(settings, "tasks-20250125T040754Z.db.gz")  # a name, under the prefix
    assert task_ids(settings.path_sqlite) == ids


def test_encrypted_multipart_upload_and_download(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    settings, ids = make_database(tmp_path, tasks=2)
    add_filler(settings.path_sqlite, 2 * PART_SIZE)  # incompressible: > one part
    settings = s3_server.settings(
        tmp_path, bucket, backup_encrypt=True, backup_object_storage_path=""
    )
    result = create_backup(settings)
    key = result.info.name
    assert key.endswith(".db.gz.enc")
    head = s3_server.client().head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload in 3 parts
    assert head["ContentLength"] == result.info.size > 2 * PART_SIZE

    Path(settings.path_sqlite).unlink()
    restore_backup(settings, key)
    assert task_ids(settings.path_sqlite) == ids


def test_a_corrupted_object_is_refused(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    settings, _ = make_database(tmp_path, tasks=2)
    settings = s3_server.settings(tmp_path, bucket)
    result = create_backup(settings)
    key = result.location.removeprefix(f"s3://{bucket}/")
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key=key)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:-10], Metadata=head["Metadata"])
    before = Path(settings.path_sqlite).read_bytes()
    with pytest.raises(BackupError, match="does not match its SHA-256 checksum"):
        restore_backup(settings, key)
    assert Path(settings.path_sqlite).read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backup_object_storage_secret_key": "wrong"}, "refused the secret key"),
        ({"backup_object_storage_access_key": "AKIAWRONG"}, "does not know this access key"),
        (
            {"backup_object_storage_bucket_name": "no-such-bucket"},
            "'no-such-bucket' does not exist",
        ),
        (
            {"backup_object_storage_endpoint": "http://127.0.0.1:9"},
            r"at http://127\.0\.0\.1:9 \(BACKUP_OBJECT_STORAGE_ENDPOINT\): Could not connect",
        ),
    ],
    ids=["secret", "access-key", "bucket", "endpoint"],
)
def test_wrong_settings_give_a_clear_error(
    tmp_path: Path, s3_server: S3Server, change: dict[str, str], message: str
) -> None:
    bucket = s3_server.new_bucket()
    settings, _ = make_database(tmp_path, tasks=1)
    settings = s3_server.settings(tmp_path, bucket)
    wrong = msgspec.structs.replace(settings, **change)
    for action in (
        lambda: create_backup(wrong),
        lambda: list_backups(wrong),
        lambda: restore_backup(wrong, "tasks-20250125T040752Z.db.gz"),
    ):
        with pytest.raises(BackupError, match=message):
            action()
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


def test_restore_of_a_missing_key_is_a_clear_error(tmp_path: Path, s3_server: S3Server) -> None:
    settings, _ = make_database(tmp_path, tasks=1)
    settings = s3_server.settings(tmp_path, s3_server.new_bucket())
    with pytest.raises(BackupError, match=r"no object 'nightly/tasks/tasks-nope\.db\.gz'"):
        restore_backup(settings, "tasks-nope.db.gz")


def test_object_storage_needs_a_bucket_name(tmp_path: Path, s3_server: S3Server) -> None:
    settings = s3_server.settings(tmp_path, "")
    with pytest.raises(BackupError, match="needs BACKUP_OBJECT_STORAGE_BUCKET_NAME"):
        create_backup(settings)
