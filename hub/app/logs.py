"""Log lines a person can read in development and a machine can read in production.

- ``text`` (development's default): ``2025-01-31 12:00:00,123 INFO hub.app: socket connected
  sid=... user=alice transport=polling``: the message, then the record's fields as ``key=value``.
- ``json`` (production's default, or ``HUB_LOG_FORMAT=json``): one JSON object per line with
  ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the record's fields (``sid``,
  ``connection``, ``user``, ``transport``, ``reason``, ``code``, ``address``...) and
  ``exception`` (the traceback) when there is one.

The hub writes one line per connection lifecycle event (a socket connected, with its transport
and user; a connection upgraded; a socket disconnected, with the reason; a connection refused,
with the code), and nothing per message.

Tokens and secrets are never written: :class:`RedactingFilter`, on the handler, rewrites every
record before it is formatted. Whatever looks like a JWT, the credential after ``Bearer``, and
each configured secret (the JWT secret, the emit token, the access hook's token, the Redis
password) become ``[redacted]``, in the message, in the fields and in a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET, Config, ConfigError

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure",
    "configure_for",
    "configure_from_environ",
    "redact",
    "secrets_of",
]

REDACTED = "[redacted]"

# A JWT: three base64url parts; the first is a JSON header, so it starts with "eyJ" ('{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# "Authorization: Bearer <credential>", in whatever case, wherever it is quoted.
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])[^\s,;\"'}\]]+")
MIN_SECRET = 6
"""Secrets shorter than this are not searched for literally (they would eat ordinary words);
configuration refuses none in production, where secrets are long."""

# What every LogRecord has: anything else on a record is a field given with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with JWTs, bearer credentials and ``secrets`` replaced by ``[redacted]``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(r"\1" + REDACTED, text)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was given with ``extra=``."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no token or secret reaches a handler's output.

    Args:
        secrets: literal values to hide wherever they appear (shorter than
            :data:`MIN_SECRET` characters are ignored).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first: a secret that holds another is hidden whole.
        self.secrets = sorted(
            {secret for secret in secrets if len(secret) >= MIN_SECRET}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a logging call whose arguments do not fit its format
            message = f"{record.msg!r} with arguments that do not fit it"
        record.msg = self.redact(message)
        record.args = None
        for key, value in fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
            elif not isinstance(value, int | float | bool | type(None)):
                setattr(record, key, self.redact(str(value)))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the fields,
    ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # json.dumps escapes newlines inside strings: a traceback stays on its one line.
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` (and the traceback below, if any)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = fields(record)
        if not extra:
            return line
        return line + " " + " ".join(f"{key}={_value(value)}" for key, value in extra.items())


class _HubHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (and replaces when called again)."""


def configure(
    *,
    json_lines: bool,
    level: str | int = "INFO",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr), formatted and redacted.

    Replaces the handler a previous call installed; leaves other handlers alone.

    Args:
        json_lines: JSON objects, one per line (else human-readable lines).
        level: the root logger's level.
        secrets: literal values never to write (see :class:`RedactingFilter`).
        stream: where to write; stderr by default.

    Returns:
        The installed handler.
    """
    handler = _HubHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _HubHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def secrets_of(config: Config) -> list[str]:
    """The configuration's secrets: the JWT secret, the emit token, the access hook's token,
    the Redis password; and the development ones, which are public but still never logged."""
    values = [config.jwt_secret, config.emit_token, config.access_hook_token]
    if config.redis_url:
        values.append(urllib.parse.urlsplit(config.redis_url).password)
    values += [DEV_JWT_SECRET, DEV_EMIT_TOKEN]
    return [value for value in values if value]


def configure_for(config: Config, stream: IO[str] | None = None) -> logging.Handler:
    """Logging as ``config`` says: JSON lines in production (or with ``log_format="json"``),
    text otherwise; its level; its secrets redacted."""
    json_lines = config.log_format == "json" or (config.log_format is None and config.production)
    return configure(
        json_lines=json_lines, level=config.log_level, secrets=secrets_of(config), stream=stream
    )


def configure_from_environ(
    environ: Mapping[str, str], stream: IO[str] | None = None
) -> logging.Handler:
    """Logging as the environment says, before the command has read its configuration (a
    configuration error is the command's to report; here it falls back to the defaults, still
    hiding the secrets that are set)."""
    try:
        config = Config.from_env(environ)
    except ConfigError:
        config = Config(
            jwt_secret=environ.get("JWT_ACCESS_SECRET"),
            emit_token=environ.get("HUB_EMIT_TOKEN"),
            access_hook_token=environ.get("HUB_ACCESS_HOOK_TOKEN"),
        )
    return configure_for(config, stream)
