"""The hub's configuration: environment variables, with command-line flags over them.

Names the platform already uses are kept: ``JWT_ACCESS_SECRET``, ``WS_ALLOWED_ORIGINS``
(comma-separated), ``NODE_ENV`` or ``HUB_ENV`` (``development`` | ``production``); the hub's own
start with ``HUB_``. :meth:`Config.from_env` reads them; :meth:`Config.check` refuses a production
configuration that lacks a secret or an emit token, naming what is missing.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from hub.app.auth import AuthSettings
from hub.server.forwarded import trusted_networks
from hub.server.server import NODE_ID

__all__ = [
    "DEV_EMIT_TOKEN",
    "DEV_JWT_SECRET",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "Environment",
]

# Development only: known values so that `hub token` and the demo's curl work out of the box.
# Production refuses to start without its own (Config.check).
DEV_JWT_SECRET = "hub-development-secret-do-not-use-in-production"
DEV_EMIT_TOKEN = "hub-development-emit-token"

_DEV_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?")


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to set."""


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


def _float(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _text(value: str, name: str) -> str:
    return value


def _bool(value: str, name: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), not {value!r}")


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# environment variable -> (Config field, converter)
_ENV_FIELDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "HUB_HOST": ("host", _text),
    "HUB_PORT": ("port", _int),
    "HUB_PATH": ("path", _text),
    "HUB_INTERNAL_HOST": ("internal_host", _text),
    "HUB_INTERNAL_PORT": ("internal_port", _int),
    "HUB_DATABASE": ("database", _text),
    "HUB_ACCESS_HOOK_URL": ("access_hook_url", _text),
    "HUB_ACCESS_HOOK_TOKEN": ("access_hook_token", _text),
    "JWT_ACCESS_SECRET": ("jwt_secret", _text),
    "HUB_JWT_ALGORITHMS": ("jwt_algorithms", lambda v, n: _list(v)),
    "HUB_JWT_PUBLIC_KEYS": ("jwt_public_keys", lambda v, n: _list(v)),
    "HUB_JWT_ISSUER": ("jwt_issuer", _text),
    "HUB_JWT_AUDIENCE": ("jwt_audience", _text),
    "HUB_EMIT_TOKEN": ("emit_token", _text),
    "WS_ALLOWED_ORIGINS": ("allowed_origins", lambda v, n: _list(v)),
    "HUB_PING_INTERVAL": ("ping_interval", _float),
    "HUB_PING_TIMEOUT": ("ping_timeout", _float),
    "HUB_MAX_PAYLOAD": ("max_payload", _int),
    "HUB_TOKEN_WARNING": ("token_warning", _float),
    "HUB_RECOVERY_SECONDS": ("recovery_seconds", _float),
    "HUB_SHUTDOWN_SECONDS": ("shutdown_seconds", _float),
    "HUB_MAX_CONNECTIONS": ("max_connections", _int),
    "HUB_CONNECTIONS_PER_IP": ("connections_per_ip", _float),
    "HUB_MAX_INTERNAL_BODY": ("max_internal_body", _int),
    "HUB_NODE_ID": ("node_id", _text),
    "HUB_TRUSTED_PROXIES": ("trusted_proxies", lambda v, n: _list(v)),
    "HUB_REDIS_URL": ("redis_url", _text),
    "HUB_MAX_BUFFERED": ("max_buffered", _int),
    "HUB_METRICS_PUBLIC": ("metrics_public", _bool),
    "HUB_LOG_FORMAT": ("log_format", lambda v, n: v.strip().lower()),
    "HUB_LOG_LEVEL": ("log_level", lambda v, n: v.strip().upper()),
}


# field -> the range it must lie in
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("port", 0, 65535),
    ("internal_port", 0, 65535),
    ("ping_interval", 0.001, 86400),
    ("ping_timeout", 0.001, 86400),
    ("max_payload", 1, 1 << 30),
    ("token_warning", 0, 86400 * 365),
    ("recovery_seconds", 0, 86400),
    ("shutdown_seconds", 0, 3600),
    ("max_connections", 0, 10_000_000),
    ("connections_per_ip", 0, 1_000_000),
    ("max_internal_body", 1, 1 << 30),
    ("max_buffered", 1024, 1 << 31),
)


@attrs.frozen
class Config:
    """Everything the hub reads at start-up. Times in seconds, sizes in bytes."""

    env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = "/socket.io/"
    internal_host: str | None = None
    internal_port: int | None = None
    database: str = "hub.sqlite3"
    access_hook_url: str | None = None
    access_hook_token: str | None = None
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    # For RS256 and the other public-key algorithms: "kid=/path/key.pem", comma-separated.
    jwt_public_keys: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    emit_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    token_warning: float = 300.0
    # Connection state recovery: a client back within this many seconds gets its socket and
    # the events it missed (hub.server.recovery); 0 turns it off.
    recovery_seconds: float = 120.0
    # On SIGTERM, how long clients get to be let go before the process exits anyway.
    shutdown_seconds: float = 10.0
    # New connections: at most this many open (503) and, per client address, this many per
    # second on average with bursts of 20 (429); 0 is no limit.
    max_connections: int = 0
    connections_per_ip: float = 0.0
    max_internal_body: int = 1_000_000
    freeze_gc: bool = False  # see hub.server.ServerOptions.freeze_gc; `hub serve` turns it on
    # Several nodes behind nginx: the node's name, put before its session ids for sticky
    # routing, and the proxies whose X-Forwarded-For is believed (hub.server.ServerOptions).
    node_id: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    # Several nodes sharing rooms: the Redis they publish through (hub.cluster.RedisCluster).
    redis_url: str | None = None
    # Bytes queued for one client before it is let go as a slow consumer (hub.ServerOptions).
    max_buffered: int = 4_000_000
    # /health, /ready and /metrics on the public port too, without a token (hub.app.metrics).
    metrics_public: bool = False
    # Log lines: "text" for people, "json" (one object per line) for machines; None: json in
    # production, text in development (hub.app.logs).
    log_format: str | None = None
    log_level: str = "INFO"

    def __attrs_post_init__(self) -> None:
        names = {field: name for name, (field, _) in _ENV_FIELDS.items()}
        for field, low, high in _RANGES:
            value = getattr(self, field)
            if value is None:
                continue
            if not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(
                    f"{names[field]} must be between {low:g} and {high:g}, not {value!r}"
                )
        if self.node_id is not None and re.fullmatch(NODE_ID, self.node_id) is None:
            raise ConfigError(
                f"HUB_NODE_ID must be 1 to 32 of A-Z a-z 0-9 _ -, not {self.node_id!r}"
            )
        try:
            trusted_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"HUB_TRUSTED_PROXIES: {exc}") from None
        if self.log_format is not None and self.log_format not in LOG_FORMATS:
            raise ConfigError(f"HUB_LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"HUB_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "HUB_REDIS_URL must be a redis://, rediss:// or unix:// URL,"
                f" not {self.redis_url!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Config:
        """Read the environment; ``overrides`` (command-line flags) win over it.

        Raises:
            ConfigError: a value has the wrong form.
        """
        values: dict[str, Any] = {}
        env_name = environ.get("HUB_ENV") or environ.get("NODE_ENV") or "development"
        try:
            values["env"] = Environment(env_name.strip().lower())
        except ValueError:
            raise ConfigError(
                f"HUB_ENV/NODE_ENV must be 'development' or 'production', not {env_name!r}"
            ) from None
        for name, (field, convert) in _ENV_FIELDS.items():
            raw = environ.get(name)
            if raw is not None and raw != "":
                values[field] = convert(raw, name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def production(self) -> bool:
        return self.env is Environment.PRODUCTION

    def check(self) -> Config:
        """Refuse what cannot run; in development, fill in the development defaults.

        Returns:
            The configuration to run with.

        Raises:
            ConfigError: production without ``JWT_ACCESS_SECRET`` or ``HUB_EMIT_TOKEN`` (all
                that is missing is named), or without ``WS_ALLOWED_ORIGINS``.
        """
        if self.production:
            hmac = any(a.upper().startswith("HS") for a in self.jwt_algorithms)
            missing = [
                name
                for name, value in (
                    ("JWT_ACCESS_SECRET", self.jwt_secret if hmac else "not needed"),
                    ("HUB_EMIT_TOKEN", self.emit_token),
                    ("WS_ALLOWED_ORIGINS", self.allowed_origins),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    "production needs " + ", ".join(missing) + " (set them in the environment)"
                )
            return self
        return attrs.evolve(
            self,
            jwt_secret=self.jwt_secret or DEV_JWT_SECRET,
            emit_token=self.emit_token or DEV_EMIT_TOKEN,
        )

    def auth_settings(self) -> AuthSettings:
        """How tokens are checked: the secret, or the public keys read from their files.

        Raises:
            ConfigError: a key file cannot be read, or the settings are unsafe or incomplete
                (say, RS256 without ``HUB_JWT_PUBLIC_KEYS``).
        """
        keys: dict[str, str] = {}
        for entry in self.jwt_public_keys:
            kid, _, path = entry.partition("=")
            if not kid or not path:
                raise ConfigError(
                    f"HUB_JWT_PUBLIC_KEYS entries are kid=/path/key.pem, not {entry!r}"
                )
            try:
                with open(path, encoding="ascii") as file:
                    keys[kid.strip()] = file.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"HUB_JWT_PUBLIC_KEYS: cannot read the key {kid!r}: {exc}"
                ) from None
        hmac = any(a.upper().startswith("HS") for a in self.jwt_algorithms)
        try:
            return AuthSettings(
                secret=self.jwt_secret if hmac else None,
                algorithms=self.jwt_algorithms,
                public_keys=keys,
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
            )
        except ValueError as exc:
            raise ConfigError(f"token settings (HUB_JWT_*): {exc}") from None

    def origin_allowed(self, origin: str) -> bool:
        """CORS as the platform expects: development allows ``http(s)://localhost:*`` and
        ``127.0.0.1:*`` (plus ``WS_ALLOWED_ORIGINS``); production exactly ``WS_ALLOWED_ORIGINS``."""
        if origin in self.allowed_origins:
            return True
        return not self.production and _DEV_ORIGIN.fullmatch(origin) is not None
