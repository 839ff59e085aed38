"""Settings from the environment and from an env file."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tasks_server.cli import main
from tasks_server.config import Settings, SettingsError, load_settings, read_env_file


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
        ("CLUSTER_MODE", "maybe"),
        ("CLUSTER_MODE", "2"),
        ("MAX_INSTANCES", "-1"),
        ("MAX_INSTANCES", "two"),
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
    settings, warnings = load_settings(str(env_file), host="::1", port=None)
    assert warnings == []
    assert settings.port == 9666  # the real environment wins over the file
    assert settings.host == "::1"  # a command-line option wins over both
    assert settings.cipher_key == "quoted value"


def test_every_env_file_line_without_equals_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("nonsense\nPORT=1\nmore nonsense\n")
    with pytest.raises(SettingsError, match=r"bad\.env:1") as refused:
        read_env_file(str(env_file))
    assert refused.value.problems == (
        f"{env_file}:1: expected KEY=VALUE",
        f"{env_file}:3: expected KEY=VALUE",
    )


# ---- every problem at once ----


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(
            {
                "PORT": "http",
                "LOG": "maybe",
                "MAX_TASKS_IN_QUEUE": "0",
                "PATH_TLS_KEY": "/tls/key.pem",
                "DATABASE_URL": "postgresql://u@h/db",
            }
        )
    assert refused.value.problems == (
        "PORT='http': expected a port number 1..65535",
        "LOG='maybe': expected 1 or 0",
        "MAX_TASKS_IN_QUEUE='0': expected an integer >= 1",
        "PATH_TLS_KEY needs PATH_TLS_CERT",
        "DATABASE_URL needs CIPHER_KEY: every node must seal tasks with the same key",
    )
    message = str(refused.value)
    assert message.startswith("5 problems with the settings:\n")
    for variable in ("PORT", "LOG", "MAX_TASKS_IN_QUEUE", "PATH_TLS_KEY", "DATABASE_URL"):
        assert f"\n  {variable}" in message


def test_one_bad_setting_is_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PORT": "0"})
    assert str(refused.value) == "PORT='0': expected a port number 1..65535"


def test_a_rule_across_settings_is_left_out_when_one_of_them_could_not_be_read() -> None:
    """MAX_THROTTLE_REQUEST=-1 is wrong: that it is not set with the window is not news."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"MAX_THROTTLE_REQUEST": "-1", "MAX_THROTTLE_TIME_WINDOW": "1000"})
    assert refused.value.problems == ("MAX_THROTTLE_REQUEST='-1': expected an integer >= 0",)


def test_settings_made_in_code_report_every_conflict() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings(max_throttle_request=5, path_tls_ca="/ca.pem", database_url="postgresql://h/d")
    assert len(refused.value.problems) == 3


def test_bad_lines_and_bad_values_of_an_env_file_are_reported_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("LOG", raising=False)
    env_file = tmp_path / "tasks.env"
    env_file.write_text("PORT=99999\nnonsense\nLOG=perhaps\nLGO=1\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(str(env_file))
    assert refused.value.problems == (
        f"{env_file}:2: expected KEY=VALUE",
        "PORT='99999': expected a port number 1..65535",
        "LOG='perhaps': expected 1 or 0",
    )
    # a misspelt variable may be the cause: it is said too, as a note
    assert str(refused.value).startswith("3 problems with the settings:\n")
    assert str(refused.value).endswith(
        f"\n  note: {env_file}: LGO is not a setting (ignored); did you mean LOG?"
    )


# ---- unknown variables in an env file ----


def test_unknown_variables_of_an_env_file_are_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAX_IN_FLIGHT", raising=False)
    env_file = tmp_path / "tasks.env"
    env_file.write_text("LGO=1\nport=9555\nMAX_INFLIGHT=3\nCOMPLETELY_UNRELATED=1\nTZ=UTC\n")
    settings, warnings = load_settings(str(env_file))
    assert warnings == [
        f"{env_file}: LGO is not a setting (ignored); did you mean LOG?",
        f"{env_file}: port is not a setting (ignored); did you mean PORT?",
        f"{env_file}: MAX_INFLIGHT is not a setting (ignored); did you mean MAX_IN_FLIGHT?",
        f"{env_file}: COMPLETELY_UNRELATED is not a setting (ignored)",
    ]
    assert settings.max_in_flight == 1000  # ignored indeed


def test_the_environment_is_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGO", "1")  # the environment holds many other programs' variables
    assert load_settings(None)[1] == []


def test_commands_log_the_warnings_and_report_every_bad_setting(tmp_path: Path) -> None:
    env_file = tmp_path / "tasks.env"
    env_file.write_text("LGO=1\n")
    env = {"PATH_SQLITE": str(tmp_path / "tasks.db"), "PORT": "", "LOG": "", "LOG_FORMAT": ""}
    listed = CliRunner().invoke(main, ["backups", "--env-file", str(env_file)], env=env)
    assert listed.exit_code == 0, listed.output
    assert "WARNING" in listed.output
    assert "LGO is not a setting (ignored); did you mean LOG?" in listed.output

    env_file.write_text("PORT=0\nLOG=maybe\n")
    refused = CliRunner().invoke(main, ["serve", "--env-file", str(env_file)], env=env)
    assert refused.exit_code == 2
    assert "Error: 2 problems with the settings:" in refused.output
    assert "PORT='0'" in refused.output and "LOG='maybe'" in refused.output


def test_an_env_file_with_a_byte_order_mark_reads_its_first_variable(tmp_path: Path) -> None:
    env_file = tmp_path / "tasks.env"
    env_file.write_bytes("\ufeffPORT=9555\n".encode())
    settings, warnings = load_settings(str(env_file))
    assert settings.port == 9555
    assert warnings == []


def test_unreadable_env_files_and_keyless_lines_are_problems_not_crashes(tmp_path: Path) -> None:
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"PORT=\xff\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(str(binary))
    assert refused.value.problems == (f"{binary}: not UTF-8 text (byte 5)",)
    keyless = tmp_path / "keyless.env"
    keyless.write_text("=x\nLGO=1\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(str(keyless))
    assert refused.value.problems == (f"{keyless}:1: expected KEY=VALUE",)
    # the misspelt variable is a note that may explain it, not a second problem
    assert str(refused.value).startswith("1 problem with the settings:\n")
    assert "note: " in str(refused.value) and "LGO is not a setting" in str(refused.value)


def test_hardening_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "MAX_THROTTLE_REQUEST": "10",
            "MAX_THROTTLE_TIME_WINDOW": "60000",
            "TRUST_PROXY_HEADERS": "1",
            "REGISTRATION_TOKEN": "abcdefghijklmnop-._~+/==",
            "PATH_TLS_CERT": "/tls/cert.pem",
            "PATH_TLS_KEY": "/tls/key.pem",
            "PATH_TLS_CA": "/tls/ca.pem",
        }
    )
    assert (settings.max_throttle_request, settings.max_throttle_time_window) == (10, 60000)
    assert settings.throttled and settings.trust_proxy_headers
    assert settings.registration_token == "abcdefghijklmnop-._~+/=="
    assert settings.tls
    assert (settings.path_tls_cert, settings.path_tls_key, settings.path_tls_ca) == (
        "/tls/cert.pem",
        "/tls/key.pem",
        "/tls/ca.pem",
    )
    defaults = Settings.from_env({})
    assert not defaults.throttled and not defaults.tls and not defaults.registration_token


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_THROTTLE_REQUEST": "10"}, "MAX_THROTTLE_TIME_WINDOW"),  # one without the other
        ({"MAX_THROTTLE_TIME_WINDOW": "1000"}, "MAX_THROTTLE_REQUEST"),
        ({"MAX_THROTTLE_REQUEST": "-1"}, "MAX_THROTTLE_REQUEST"),
        ({"REGISTRATION_TOKEN": "too-short"}, "REGISTRATION_TOKEN"),
        ({"REGISTRATION_TOKEN": "sixteen chars but spaces"}, "REGISTRATION_TOKEN"),
        ({"REGISTRATION_TOKEN": "=" * 20}, "REGISTRATION_TOKEN"),
        ({"TRUST_PROXY_HEADERS": "maybe"}, "TRUST_PROXY_HEADERS"),
        ({"PATH_TLS_KEY": "/tls/key.pem"}, "PATH_TLS_CERT"),
        ({"PATH_TLS_CA": "/tls/ca.pem"}, "PATH_TLS_CERT"),
    ],
)
def test_bad_hardening_settings_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_cluster_variables_are_read() -> None:
    settings = Settings.from_env({"CLUSTER_MODE": "1", "MAX_INSTANCES": "3"})
    assert (settings.cluster_mode, settings.max_instances, settings.instances) == (True, 3, 3)
    defaults = Settings.from_env({})
    assert (defaults.cluster_mode, defaults.max_instances, defaults.instances) == (False, 0, 1)
    for on in ("true", "YES", "on"):
        assert Settings.from_env({"CLUSTER_MODE": on}).cluster_mode
    for off in ("0", "false", "No", "off"):
        assert not Settings.from_env({"CLUSTER_MODE": off}).cluster_mode


def test_instances_is_one_without_cluster_mode_and_one_per_cpu_with_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MAX_INSTANCES is read but has no effect without CLUSTER_MODE
    assert Settings.from_env({"CLUSTER_MODE": "0", "MAX_INSTANCES": "4"}).instances == 1
    assert Settings.from_env({"MAX_INSTANCES": "4"}).instances == 1
    # the CPUs this process may use (a container's limit), not the host's count
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert Settings.from_env({"CLUSTER_MODE": "1"}).instances == 3
    assert Settings.from_env({"CLUSTER_MODE": "1", "MAX_INSTANCES": "0"}).instances == 3
    assert Settings.from_env({"CLUSTER_MODE": "1", "MAX_INSTANCES": "2"}).instances == 2
    monkeypatch.delattr(os, "sched_getaffinity")  # a platform without it
    assert Settings.from_env({"CLUSTER_MODE": "1"}).instances == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # the count cannot be known
    assert Settings.from_env({"CLUSTER_MODE": "1"}).instances == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tasks:secret@db.internal:5432/tasks?sslmode=require",
        "postgres://tasks@127.0.0.1/tasks",
        "postgresql:///tasks?host=/var/run/postgresql",
    ],
)
def test_database_url_selects_postgresql(url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": url, "CIPHER_KEY": "shared-key"})
    assert settings.database_url == url
    assert "secret" not in settings.database_label


def test_the_database_label_hides_only_the_password() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://tasks:s3cret@db:5432/tasks", "CIPHER_KEY": "k"}
    )
    assert settings.database_label == "postgresql://tasks:***@db:5432/tasks"
    assert Settings.from_env({"PATH_SQLITE": "/srv/t.db"}).database_label == "/srv/t.db"


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "sqlite:///x.db", "http://example.com", "postgresql://"]
)
def test_a_database_url_that_is_not_postgresql_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": url, "CIPHER_KEY": "k"})


def test_database_url_needs_the_cipher_key_every_node_shares() -> None:
    with pytest.raises(SettingsError, match="CIPHER_KEY"):
        Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"})


def test_task_retention_days() -> None:
    assert Settings.from_env({}).task_retention_days == 30
    assert Settings.from_env({"TASK_RETENTION_DAYS": "0"}).task_retention_days == 0
    with pytest.raises(SettingsError, match="TASK_RETENTION_DAYS"):
        Settings.from_env({"TASK_RETENTION_DAYS": "-1"})
