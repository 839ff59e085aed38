"""Settings from the environment and from an env file."""

from pathlib import Path

import pytest

from tasks_server.cli import load_settings
from tasks_server.config import Settings, SettingsError, read_env_file


def test_defaults_with_nothing_set() -> None:
    settings = Settings.from_env({})
    assert settings.port == 9420
    assert settings.path_sqlite == ".data/tasks.db"
    assert settings.max_tasks_in_queue == 1000
    assert settings.max_size_body_request == 32768
    assert settings.log is False


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "HOST": "0.0.0.0",
            "PORT": "9999",
            "PATH_SQLITE": "/tmp/x/t.db",
            "CIPHER_KEY": "k",
            "LOG": "1",
            "MAX_SIZE_BODY_REQUEST": "10",
            "MAX_SIZE_DATA_RESPONSE": "20",
            "MAX_TASKS_IN_QUEUE": "30",
            "MAX_IN_FLIGHT": "40",
            "SHUTDOWN_GRACE_MS": "0",
            "INSTANCE_STALE_MS": "50",
        }
    )
    assert (settings.host, settings.port, settings.path_sqlite) == ("0.0.0.0", 9999, "/tmp/x/t.db")
    assert (settings.cipher_key, settings.log) == ("k", True)
    assert (settings.max_size_body_request, settings.max_size_data_response) == (10, 20)
    assert (settings.max_tasks_in_queue, settings.max_in_flight) == (30, 40)
    assert (settings.shutdown_grace_ms, settings.instance_stale_ms) == (0, 50)
    assert settings.data_dir == Path("/tmp/x")


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env({"PORT": "", "LOG": " "}).port == 9420


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "0"),
        ("PORT", "70000"),
        ("PORT", "http"),
        ("LOG", "maybe"),
        ("MAX_TASKS_IN_QUEUE", "0"),
        ("MAX_SIZE_BODY_REQUEST", "-5"),
        ("SHUTDOWN_GRACE_MS", "-1"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_env_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "tasks.env"
    env_file.write_text(
        "# settings\n\nPORT=9555\nexport LOG=1\n"
        "CIPHER_KEY='quoted value'\nPATH_SQLITE=\"/a/b.db\"\n"
    )
    assert read_env_file(str(env_file)) == {
        "PORT": "9555",
        "LOG": "1",
        "CIPHER_KEY": "quoted value",
        "PATH_SQLITE": "/a/b.db",
    }
    monkeypatch.setenv("PORT", "9666")
    settings = load_settings(str(env_file), host="::1", port=None)
    assert settings.port == 9666  # the real environment wins over the file
    assert settings.host == "::1"  # a command-line option wins over both
    assert settings.cipher_key == "quoted value"


def test_env_file_line_without_equals_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("PORT=1\nnonsense\n")
    with pytest.raises(SettingsError, match=r"bad\.env:2"):
        read_env_file(str(env_file))
