"""Settings: precedence of flags, environment and config file; refusals; masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from airia_server.config import ConfigFileError, describe, load_settings


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "airia.toml"
    path.write_text('port = 9001\nlog_level = "DEBUG"\nhost = "0.0.0.0"\n')
    return path


def test_flags_beat_environment_beats_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRIA_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("AIRIA_HOST", "127.0.0.2")
    settings = load_settings(config_file, host="127.0.0.3")
    assert settings.port == 9001  # file only
    assert settings.log_level == "WARNING"  # environment over file
    assert settings.host == "127.0.0.3"  # flag over both


def test_config_file_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRIA_CONFIG_FILE", str(config_file))
    assert load_settings().port == 9001


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{file}", "config"],
        ["config", "--config", "{file}"],
        ["--config", "{other}", "config", "--config", "{file}"],  # the nearer one wins
        ["retention", "show", "--config", "{file}"],
    ],
)
def test_config_may_come_before_or_after_the_command(
    config_file: Path, tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`airia-server serve --config f.toml` is where people put it; it was refused
    (\"unrecognized arguments\") unless it came before the command."""
    from airia_server import cli

    other = tmp_path / "other.toml"
    other.write_text("port = 7000\n")
    args = cli._parser().parse_args([a.format(file=config_file, other=other) for a in argv])
    assert args.config == config_file
    assert load_settings(args.config).port == 9001
    assert cli._parser().parse_args(["config"]).config is None


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(ConfigFileError, match="prot"):
        load_settings(path)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRIA_PORT", "eighty")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert info.value.errors()[0]["loc"] == ("port",)


def test_cors_origins_must_be_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRIA_CORS_ORIGINS", "*")
    with pytest.raises(ValidationError):
        load_settings()
    monkeypatch.setenv("AIRIA_CORS_ORIGINS", "https://a.example, https://b.example/")
    assert load_settings().cors_origin_list == ["https://a.example", "https://b.example"]


def test_cors_origins_are_compared_as_a_browser_spells_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A browser sends `Origin` in lower case, without the scheme's default port: an
    origin configured otherwise never matched, and CORS failed without a word."""
    monkeypatch.setenv("AIRIA_CORS_ORIGINS", "HTTPS://B.COM,https://c.com:443,http://d.com:8080")
    assert load_settings().cors_origin_list == [
        "https://b.com",
        "https://c.com",
        "http://d.com:8080",
    ]
    for bad in ("https://a.com:99999", "https://a.com:0"):
        monkeypatch.setenv("AIRIA_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError):
            load_settings()


@pytest.mark.parametrize(
    "value",
    [
        "chat.example.com",
        "ftp://x",
        "https://h?x=1",
        "https://h/#top",
        "https://",
        "http://a b",
        "https://u:p@h",
        "https://h:port",
    ],
)
def test_a_public_url_that_is_no_http_url_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """websocketUrl is built on it: it must come out a ws:// or wss:// URL a client opens."""
    monkeypatch.setenv("AIRIA_PUBLIC_URL", value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert info.value.errors()[0]["loc"] == ("public_url",)


@pytest.mark.parametrize(
    ("value", "kept", "websocket"),
    [
        ("HTTPS://Chat.example.com/", "https://Chat.example.com", "wss://Chat.example.com"),
        ("http://10.0.0.1:8080/airia/", "http://10.0.0.1:8080/airia", "ws://10.0.0.1:8080/airia"),
        ("  ", None, None),
    ],
)
def test_a_public_url_is_kept_with_its_scheme_in_lower_case(
    monkeypatch: pytest.MonkeyPatch, value: str, kept: str | None, websocket: str | None
) -> None:
    from airia_server.app import _ws_base_url

    monkeypatch.setenv("AIRIA_PUBLIC_URL", value)
    monkeypatch.setenv("AIRIA_HOST", "0.0.0.0")
    settings = load_settings()
    assert settings.public_url == kept
    assert _ws_base_url(settings) == websocket


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"AIRIA_LOG_LEVEL": "LOUD"}, "DEBUG, INFO"),
        ({"AIRIA_REDIS_URL": "notaurl"}, "redis://"),
        ({"AIRIA_DATABASE_POOL_MIN": "20", "AIRIA_DATABASE_POOL_MAX": "5"}, "POOL_MIN (20)"),
        (
            {"AIRIA_JWT_ALGORITHM": "RS256", "AIRIA_JWT_PUBLIC_KEY": "/nonexistent.pem"},
            "cannot read /nonexistent.pem",
        ),
        (
            {"AIRIA_JWT_ALGORITHM": "ES256", "AIRIA_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----x"},
            "not a ES256 public key",
        ),
        ({"AIRIA_RETENTION_DAYS": "1000001"}, "less than or equal to 1000000"),
    ],
    ids=["log-level", "redis-url", "pool-bounds", "key-file", "key-text", "retention"],
)
def test_settings_that_would_fail_later_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], says: str
) -> None:
    """Each used to start, then crash with a traceback (or refuse every token)."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert says in str(info.value)


def test_a_log_level_in_any_case_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRIA_LOG_LEVEL", " debug ")
    assert load_settings().log_level == "DEBUG"


def test_describe_masks_secrets_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRIA_JWT_SECRET", "a-very-long-secret-value-for-tests-only")
    monkeypatch.setenv("AIRIA_DATABASE_URL", "postgresql://airia:hunter2@db:5432/airia")
    monkeypatch.setenv("AIRIA_REDIS_URL", "redis://:pa55@cache:6379/0")
    shown = dict(describe(load_settings()))
    assert shown["AIRIA_JWT_SECRET"] == "********"
    assert shown["AIRIA_DATABASE_URL"] == "postgresql://airia:********@db:5432/airia"
    assert "pa55" not in shown["AIRIA_REDIS_URL"]
    assert "hunter2" not in "".join(shown.values())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@ss@db:5432/x", "postgresql://u:********@db:5432/x"),
        (
            "redis://:pw@h:6379/0?password=zzz&db=1",
            "redis://:********@h:6379/0?password=********&db=1",
        ),
        ("postgresql://u:pw@h/d?sslpassword=q", "postgresql://u:********@h/d?sslpassword=********"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///./var/a.db", "sqlite:///./var/a.db"),
    ],
)
def test_a_url_is_shown_with_every_password_masked(url: str, shown: str) -> None:
    """An '@' in the password, or a password in the query, came out partly in clear."""
    from airia_server.config import mask_url

    assert mask_url(url) == shown


def test_production_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRIA_ENVIRONMENT", "production")
    monkeypatch.setenv("AIRIA_JWT_SECRET", "changeme")
    with pytest.raises(ValidationError, match=r"jwt_secret|JWT_SECRET"):
        load_settings()


def test_an_algorithm_without_its_key_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """RS256 with only AIRIA_JWT_SECRET started, and could accept no token."""
    monkeypatch.setenv("AIRIA_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("AIRIA_JWT_SECRET", "s" * 40)
    with pytest.raises(ValidationError, match="AIRIA_JWT_PUBLIC_KEY, which is unset"):
        load_settings()
    monkeypatch.delenv("AIRIA_JWT_SECRET")
    assert load_settings().jwt_verification_key() is None  # no bearer tokens: allowed


def test_a_missing_public_key_file_stops_the_start_whatever_the_algorithm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRIA_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("AIRIA_JWT_PUBLIC_KEY", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match=r"cannot read .*missing\.pem"):
        load_settings()


def test_only_the_server_s_statements_have_the_statement_timeout() -> None:
    """The server's requests are given up after it; the commands (an export counting
    and sorting every row, an import's last pass over a large database) are not."""
    from airia_server.config import Settings
    from airia_server.storage import open_store

    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:5432/x",
        database_statement_timeout_seconds=2.5,
    )
    assert open_store(settings, serving=True)._timeouts == {"statement_timeout": "2500"}
    assert open_store(settings)._timeouts == {}


@pytest.mark.parametrize(
    "value",
    ["nonsense..host", "a b", "-x", "h_st", "x" * 64, "::g", "256.1.1.1", "999999", "1.2.3"],
)
def test_a_host_that_is_no_address_nor_name_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """It was a traceback from the server's start (the IDNA codec, or getaddrinfo)."""
    monkeypatch.setenv("AIRIA_HOST", value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert info.value.errors()[0]["loc"] == ("host",)


@pytest.mark.parametrize(
    "value", ["", "0.0.0.0", "::", "::1", "127.0.0.1", "localhost", "chat.example.com", "bücher.de"]
)
def test_addresses_and_host_names_are_hosts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIRIA_HOST", value)
    assert load_settings().host == value
