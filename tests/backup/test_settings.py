"""The backup variables of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_server.config import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({"PATH_SQLITE": "/srv/tasks/tasks.db"})
    assert settings.backup_enabled is True
    assert settings.backup_method_sqlite == "LOCAL"
    assert settings.backup_dir == Path("/srv/tasks/backups")
    assert settings.backup_cron_pattern_sqlite == "0 0 * * *"
    assert settings.backup_time_zone == "UTC"
    assert settings.backup_retention == 7
    assert settings.backup_encrypt is False
    assert settings.backup_object_storage_path_style is False


def test_every_backup_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "BACKUP_ENABLED": "0",
            "BACKUP_METHOD_SQLITE": "object_storage",
            "BACKUP_PATH_DIR_SQLITE": "/backups",
            "BACKUP_CRON_PATTERN_SQLITE": "*/10 * * * * *",
            "BACKUP_CRON_TZ_SQLITE": "Asia/Jakarta",
            "BACKUP_RETENTION": "30",
            "BACKUP_ENCRYPT": "1",
            "BACKUP_OBJECT_STORAGE_ENDPOINT": "https://s3.example.test",
            "BACKUP_OBJECT_STORAGE_ACCESS_KEY": "ak",
            "BACKUP_OBJECT_STORAGE_SECRET_KEY": "sk",
            "BACKUP_OBJECT_STORAGE_BUCKET_NAME": "bucket",
            "BACKUP_OBJECT_STORAGE_PATH": "a/b",
            "BACKUP_OBJECT_STORAGE_PATH_STYLE": "1",
            "S3_REGION": "auto",
            "S3_SESSION_TOKEN": "token",
        }
    )
    assert settings.backup_enabled is False
    assert settings.backup_method_sqlite == "OBJECT_STORAGE"
    assert settings.backup_dir == Path("/backups")
    assert settings.backup_cron_pattern_sqlite == "*/10 * * * * *"
    assert settings.backup_time_zone == "Asia/Jakarta"
    assert (settings.backup_retention, settings.backup_encrypt) == (30, True)
    assert settings.backup_object_storage_endpoint == "https://s3.example.test"
    assert settings.backup_object_storage_access_key == "ak"
    assert settings.backup_object_storage_secret_key == "sk"
    assert settings.backup_object_storage_bucket_name == "bucket"
    assert settings.backup_object_storage_path == "a/b"
    assert settings.backup_object_storage_path_style is True
    assert (settings.s3_region, settings.s3_session_token) == ("auto", "token")


def test_s3_variables_win_over_aws_ones() -> None:
    both = {"AWS_REGION": "eu-west-1", "S3_REGION": "auto", "AWS_SESSION_TOKEN": "a"}
    settings = Settings.from_env({**both, "S3_SESSION_TOKEN": "s"})
    assert (settings.s3_region, settings.s3_session_token) == ("auto", "s")
    settings = Settings.from_env({"AWS_REGION": "eu-west-1", "AWS_SESSION_TOKEN": "a"})
    assert (settings.s3_region, settings.s3_session_token) == ("eu-west-1", "a")


def test_cron_time_zone_falls_back_to_tz() -> None:
    assert Settings.from_env({"TZ": "Europe/Paris"}).backup_time_zone == "Europe/Paris"
    assert Settings.from_env({"TZ": ":Europe/Paris"}).backup_time_zone == "Europe/Paris"
    zone_file = "/usr/share/zoneinfo/Asia/Jakarta"
    if Path(zone_file).exists():
        assert Settings.from_env({"TZ": zone_file}).backup_time_zone == "Asia/Jakarta"
    both = {"TZ": "Europe/Paris", "BACKUP_CRON_TZ_SQLITE": "UTC"}
    assert Settings.from_env(both).backup_time_zone == "UTC"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BACKUP_METHOD_SQLITE", "FTP"),
        ("BACKUP_CRON_PATTERN_SQLITE", "61 * * * *"),
        ("BACKUP_CRON_PATTERN_SQLITE", "daily"),
        ("BACKUP_CRON_TZ_SQLITE", "Nowhere/City"),
        ("TZ", "Nowhere/City"),
        ("BACKUP_RETENTION", "0"),
        ("BACKUP_ENCRYPT", "maybe"),
        ("BACKUP_ENABLED", "sometimes"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})
