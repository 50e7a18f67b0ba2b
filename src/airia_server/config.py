"""One settings object, read once at start from `AIRIA_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_PLACEHOLDERS = {"changeme", "change-me", "secret", "your_secret", "your_api_key", "password"}


def _origin(text: str) -> str:
    """`text` as a browser spells an origin in `Origin`: the scheme and host in lower
    case, the port only when it is not the scheme's default. A browser's Origin is a
    scheme, a host and maybe a port: anything more (a path, a query, credentials) could
    never match one, nor could a port out of range. ValueError for those."""
    parts = urlsplit(text.strip().rstrip("/"))
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or port == -1
        or port == 0
    ):
        raise ValueError(
            f"{text.strip()!r} is not an exact origin (a scheme, a host and an optional "
            "port from 1 to 65535) like https://app.example.com"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


MAX_RETENTION_DAYS = 1_000_000
"""The longest retention a policy may name (about 2,700 years; longer is "for ever"),
well within every backend's integer column. One that reaches back before year 1
deletes nothing (`domain.lifecycle.apply_retention`)."""


_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Every setting, from (highest first) command-line flags, `AIRIA_*` environment
    variables, a TOML config file (`--config` or `AIRIA_CONFIG_FILE`), then defaults."""

    model_config = SettingsConfigDict(env_prefix="AIRIA_", extra="ignore")
    _config_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if cls._config_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=cls._config_file),)
        return sources

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    database_url: str = "sqlite:///./var/airia.db"
    public_url: str | None = None
    database_pool_min: int = Field(2, ge=1)
    database_pool_max: int = Field(10, ge=1)
    database_connect_timeout_seconds: float = Field(5.0, gt=0)
    """PostgreSQL: a new connection not made within this is given up (503)."""
    database_statement_timeout_seconds: float = Field(30.0, gt=0)
    """PostgreSQL: the connections' `statement_timeout`; a statement past it is
    cancelled and rolled back by PostgreSQL (503, nothing done)."""
    redis_url: str | None = None
    """`redis://HOST:PORT/DB`: fan events out to every instance. Unset: in-process only."""
    redis_prefix: str = Field("airia", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    default_deployment_id: str = Field("default", min_length=1, max_length=255)

    bootstrap_api_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    """Signs WebSocket tickets. When unset, one is generated and kept in the database,
    so every instance over the same database shares it."""

    metrics_token: SecretStr | None = None
    """When set, `GET /metrics` answers only `Authorization: Bearer <this>` (its counts
    are every tenant's traffic); unset, anyone who reaches it."""

    api_key_cache_seconds: float = Field(0.0, ge=0, le=300)
    """Remember valid API keys this long (saves a database read per request; a
    revocation then takes up to this long to take effect). 0: check every request."""
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    """PEM text of an RSA or EC public key, or the path of a file holding one."""
    jwt_algorithm: Literal[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"
    ] = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    ws_ticket_ttl_seconds: int = Field(3600, ge=10, le=7 * 24 * 3600)
    ws_heartbeat_seconds: float = Field(20.0, gt=0)
    ws_queue_size: int = Field(1000, ge=1)
    ws_compression: bool = False
    """Offer permessage-deflate on WebSockets (more memory per socket, more CPU)."""

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    header_read_timeout_seconds: float = Field(10.0, gt=0)
    """A connection that does not finish sending a request's headers this long after it
    opens, or after the request began, gets 408 and is closed."""
    body_read_timeout_seconds: float = Field(30.0, gt=0)
    """A client that sends nothing of its body for this long gets 408."""
    rate_limit_per_key: int = Field(0, ge=0)
    """Requests per minute per API key; 0 turns the limit off."""
    rate_limit_per_user: int = Field(0, ge=0)
    """Requests per minute per bearer user; 0 turns the limit off."""
    ws_max_sockets_per_user: int = Field(50, ge=1)
    cors_origins: str = ""
    """Comma-separated origins allowed to call the API from a browser, exactly as sent in
    `Origin` (`https://app.example.com`); empty (the default) turns CORS off."""

    @property
    def cors_origin_list(self) -> list[str]:
        """Each origin as a browser sends it in `Origin`, to be compared as it is."""
        return [_origin(o) for o in self.cors_origins.split(",") if o.strip()]

    feed_max_page_size: int = Field(100, ge=1, le=1000)
    conversation_messages_limit: int = Field(1000, ge=1, le=1_000_000)
    """At most this many (the newest) messages in a conversation's GET; the rest are read
    through the paged GET .../messages."""
    conversation_messages_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """And at most about this much of their text and images (the newest that fit, at least
    one): a conversation of long messages is read page by page too."""
    write_batch_max: int = Field(256, ge=1)

    blob_store: Literal["auto", "filesystem", "database"] = "auto"
    """Where attachment bytes go: `filesystem` (AIRIA_BLOB_DIR), `database` (PostgreSQL
    only, shared by every instance); `auto` picks database on PostgreSQL."""
    blob_dir: Path = Path("./var/blobs")
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    attachment_url_ttl_seconds: int = Field(3600, ge=10, le=7 * 24 * 3600)
    blob_sweep_grace_seconds: float = Field(60.0, ge=0)
    """Unreferenced blobs untouched this long are deleted (on start, periodically, and
    right after a conversation is deleted)."""

    retention_days: int = Field(0, ge=0, le=MAX_RETENTION_DAYS)
    """Default for tenants without their own policy: delete conversations untouched this
    many days (0 keeps them for ever). Per tenant: `airia-server retention set`."""
    maintenance_interval_seconds: float = Field(60.0, ge=1)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE")
        return value

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.environment == "development":
            return self
        for name in ("jwt_secret", "secret_key", "bootstrap_api_key", "metrics_token"):
            value = getattr(self, name)
            if value is None:
                continue
            raw = value.get_secret_value()
            if raw.lower() in _PLACEHOLDERS or len(raw) < 32:
                raise ValueError(
                    f"AIRIA_{name.upper()} is a placeholder or shorter than 32 characters; "
                    "set a real secret in production"
                )
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        """An IP address or a host name to listen on (0.0.0.0 is every IPv4 address,
        :: and "" every address): anything else was a traceback from the server's start
        (`nonsense..host` failed the IDNA codec there). A name whose last label is all
        digits is none (RFC 1123, 2.1): `256.1.1.1` and `999999` are bad addresses."""
        if value == "" or _is_ip(value):
            return value
        try:
            ascii_name = value.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_name = ""
        last = ascii_name.rstrip(".").rpartition(".")[2]
        if not _HOST_NAME.fullmatch(ascii_name) or last.isdigit():
            raise ValueError(f"{value[:100]!r} is not an IP address or a host name")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host and perhaps a path: `websocketUrl` (ws/wss) and
        attachment links are built on it."""
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("use the URL clients reach the server by: https://HOST[:PORT][/PATH]")
        if parts.query or parts.fragment or "@" in parts.netloc or any(c.isspace() for c in value):
            raise ValueError("a public URL has no query, fragment, user or spaces")
        try:
            parts.port  # noqa: B018 (raises on a port that is no number)
        except ValueError:
            raise ValueError(f"{parts.netloc!r} has an invalid port") from None
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token(cls, value: object) -> object:
        """Empty (an unset variable of a compose file) is unset: /metrics open, as the
        docs say. A token must fit an Authorization header as sent: printable ASCII
        without spaces (with one, it could never match)."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            if not value.strip():
                return None
            if not (value.isascii() and value.isprintable()) or any(c.isspace() for c in value):
                raise ValueError("use printable ASCII without spaces")
        return value

    @field_validator("blob_dir", mode="before")
    @classmethod
    def _named_dir(cls, value: object) -> object:
        # An empty value would be the current directory, wherever the server started.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a directory (the default is ./var/blobs)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            _origin(origin)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"use one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError("use redis://HOST:PORT/DB (or rediss://, or unix:///PATH)")
        return value.strip()

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError(
                f"AIRIA_DATABASE_POOL_MIN ({self.database_pool_min}) is above "
                f"AIRIA_DATABASE_POOL_MAX ({self.database_pool_max})"
            )
        return self

    @model_validator(mode="after")
    def _usable_jwt_key(self) -> Settings:
        """A public key that cannot be read or parsed would refuse every token at run
        time; it stops the start instead. So does an algorithm with no key of its kind:
        RS256 with only AIRIA_JWT_SECRET started, and accepted no token."""
        if self.jwt_algorithm.startswith("HS"):
            if self.jwt_public_key and "-----BEGIN" not in self.jwt_public_key:
                if not Path(self.jwt_public_key).is_file():  # set, so meant to be used
                    raise ValueError(
                        f"AIRIA_JWT_PUBLIC_KEY: cannot read {self.jwt_public_key} "
                        f"(and {self.jwt_algorithm} verifies with AIRIA_JWT_SECRET, not a key)"
                    )
            return self
        if not self.jwt_public_key:
            if self.jwt_secret is not None:
                raise ValueError(
                    f"AIRIA_JWT_ALGORITHM={self.jwt_algorithm} verifies tokens with "
                    "AIRIA_JWT_PUBLIC_KEY, which is unset; AIRIA_JWT_SECRET serves only HS256, "
                    "HS384 and HS512"
                )
            return self
        import jwt

        try:
            key = self.jwt_verification_key()
            algorithm = jwt.algorithms.get_default_algorithms()[self.jwt_algorithm]
            algorithm.prepare_key(key)
        except OSError as exc:
            raise ValueError(
                f"AIRIA_JWT_PUBLIC_KEY: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        except KeyError:
            raise ValueError(
                f"AIRIA_JWT_ALGORITHM: unknown algorithm {self.jwt_algorithm}"
            ) from None
        except (ValueError, TypeError, jwt.exceptions.PyJWTError) as exc:
            raise ValueError(
                f"AIRIA_JWT_PUBLIC_KEY is not a {self.jwt_algorithm} public key ({exc})"
            ) from None
        return self

    @model_validator(mode="after")
    def _database_blobs_need_postgres(self) -> Settings:
        if self.blob_store == "database" and not self.is_postgres:
            raise ValueError("AIRIA_BLOB_STORE=database needs a postgresql:// AIRIA_DATABASE_URL")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @cached_property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    def jwt_verification_key(self) -> str | None:
        if self.jwt_algorithm.startswith("HS"):
            return self.jwt_secret.get_secret_value() if self.jwt_secret else None
        if not self.jwt_public_key:
            return None
        text = self.jwt_public_key
        if "-----BEGIN" not in text:
            text = Path(text).read_text()
        return text


class ConfigFileError(ValueError):
    pass


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """The effective settings. Unknown keys in the file are refused by name, so a typo
    does not pass silently."""
    path = config_file or (
        Path(os.environ["AIRIA_CONFIG_FILE"]) if os.environ.get("AIRIA_CONFIG_FILE") else None
    )
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc
        unknown = sorted(set(data) - set(Settings.model_fields))
        if unknown:
            raise ConfigFileError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    Settings._config_file = path
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    finally:
        Settings._config_file = None


_SECRET_QUERY = re.compile(r"(?i)((?:^|&)(?:\w*password|pass|\w*secret|\w*token)=)[^&]*")


def mask_url(value: str) -> str:
    """`value` with the password of a URL in it masked: in its user info (up to the
    last '@' of the host part: a password may hold '@' itself) and in its query."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:********@{host}"
    path, mark, query = tail.partition("?")
    if mark:
        tail = path + "?" + _SECRET_QUERY.sub(r"\1********", query)
    return f"{scheme}://{netloc}{slash}{tail}"


def describe(settings: Settings) -> list[tuple[str, str]]:
    """(AIRIA_NAME, value) of every setting, secrets masked."""
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "********" if value.get_secret_value() else ""
        elif value is None:
            shown = ""
        else:
            shown = mask_url(str(value))
        rows.append((f"AIRIA_{name.upper()}", shown))
    return rows
