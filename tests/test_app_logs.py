"""The hub's log lines: readable text in development, JSON lines in production, one line per
connection lifecycle event, and never a token or a secret.

The formatters and the redacting filter are checked on records logged through the standard
``logging`` calls (as the hub makes them); then a hub runs as ``hub serve`` would, in process in
development and as a real ``hub serve`` subprocess in production, while the official
socket.io-client connects with a token, upgrades, receives an emit made with the emit token, and
disconnects. Every line it wrote is read back.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from interop.harness import CHECKOUT, CONNECT_TIMEOUT, STEP_TIMEOUT, node_command, open_client

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import Config, ConfigError
from hub.app.hub import Hub, HubAddresses
from hub.app.logs import REDACTED, configure, configure_for, redact, secrets_of
from hub.app.store import SQLiteStore

SECRET = "logs-test-jwt-secret-0123456789abcdef"
EMIT_TOKEN = "logs-test-emit-token-0123456789"
REDIS_PASSWORD = "logs-test-redis-password"
SETTINGS = AuthSettings(secret=SECRET)

# Any JWT (three base64url parts, a JSON header): none may appear in any line.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger as it was: the tests below install the hub's handler on it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def assert_clean(text: str, *secrets: str) -> None:
    assert JWT.search(text) is None, text
    for secret in secrets:
        assert secret not in text, (secret, text)


# -- the filter and the formatters -------------------------------------------------------------


def test_redact_hides_jwts_bearer_credentials_and_the_given_secrets() -> None:
    token = mint_token("alice", SETTINGS)
    text = (
        f"GET /socket.io/?EIO=4&token={token} Authorization: Bearer {EMIT_TOKEN},"
        f" 'authorization': 'bearer opaque-credential' secret={SECRET}"
    )
    clean = redact(text, [SECRET, EMIT_TOKEN])
    assert_clean(clean, token, SECRET, EMIT_TOKEN, "opaque-credential")
    assert clean == (
        f"GET /socket.io/?EIO=4&token={REDACTED} Authorization: Bearer {REDACTED},"
        f" 'authorization': 'bearer {REDACTED}' secret={REDACTED}"
    )
    # Ordinary text goes through untouched.
    assert redact("socket connected: user alice over polling", [SECRET]) == (
        "socket connected: user alice over polling"
    )


def test_json_lines_carry_the_fields_and_hide_secrets_in_message_fields_and_traceback(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    configure(json_lines=True, secrets=[SECRET, EMIT_TOKEN, "short"], stream=out)
    log = logging.getLogger("hub.test")
    token = mint_token("alice", SETTINGS)
    log.info(
        "socket connected",
        extra={"sid": "s1", "user": "alice", "transport": "polling", "query": f"token={token}"},
    )
    log.warning("refused %s with %s", token, EMIT_TOKEN)
    try:
        raise ValueError(f"bad secret {SECRET}\nand a second line")
    except ValueError:
        log.exception("handler failed for %s", "alice")
    log.info("a short secret is not searched for: short stays")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    entries = [json.loads(line) for line in lines]
    for line in lines:
        assert_clean(line, SECRET, EMIT_TOKEN)
    first, second, third, fourth = entries
    assert first["message"] == "socket connected"
    assert first["level"] == "INFO"
    assert first["logger"] == "hub.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert (first["sid"], first["user"], first["transport"]) == ("s1", "alice", "polling")
    assert first["query"] == f"token={REDACTED}"
    assert second["message"] == f"refused {REDACTED} with {REDACTED}"
    assert second["level"] == "WARNING"
    assert third["message"] == "handler failed for alice"
    assert "ValueError: bad secret [redacted]" in third["exception"]
    assert "Traceback" in third["exception"]
    assert fourth["message"] == "a short secret is not searched for: short stays"


def test_text_lines_are_for_people(restore_logging: None) -> None:
    out = io.StringIO()
    configure(json_lines=False, secrets=[SECRET], stream=out)
    log = logging.getLogger("hub.test")
    log.info(
        "socket disconnected",
        extra={"sid": "s1", "user": "alice", "transport": "websocket", "reason": "ping timeout"},
    )
    log.info("plain %s", SECRET)
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO hub\.test: socket disconnected sid=s1"
        r' user=alice transport=websocket reason="ping timeout"',
        first,
    ), first
    assert second.endswith(f"INFO hub.test: plain {REDACTED}")


def test_the_configuration_secrets_include_the_redis_password() -> None:
    config = Config(
        jwt_secret=SECRET,
        emit_token=EMIT_TOKEN,
        access_hook_token="logs-test-hook-token",
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    )
    secrets = secrets_of(config)
    for secret in (SECRET, EMIT_TOKEN, "logs-test-hook-token", REDIS_PASSWORD):
        assert secret in secrets


# -- a hub in development: text lines -------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    store.add_user("alice", email="alice@example.test")
    return store


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # No kept-alive connection for the stopping hub to wait on.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT, limits=limits) as client:
        yield client


async def drive(
    nursery: trio.Nursery,
    http: httpx.AsyncClient,
    public: str,
    internal: str,
    token: str,
    expired: str,
) -> None:
    """What the log must survive: a client with a token (over polling, then upgraded) that
    receives an emit made with the emit token; paths holding a token or the emit token (logged
    as unknown endpoints); a refused client; then the client leaving."""
    auth = {"Authorization": f"Bearer {EMIT_TOKEN}"}
    options = {"url": public, "auth": {"token": token}}
    async with open_client(nursery, node_command(), options, name="alice") as alice:
        await alice.expect("connect", timeout=CONNECT_TIMEOUT)
        await alice.expect("upgrade")
        response = await http.post(
            internal + "/internal/emit",
            json={"event": "note", "data": {"n": 1}, "to": ["user:alice"]},
            headers=auth,
        )
        assert response.json() == {"delivered": 1}
        await alice.expect("event", name="note")
        assert (await http.post(internal + f"/internal/emit/{token}", headers=auth)).status_code
        assert (await http.get(internal + f"/internal/{EMIT_TOKEN}", headers=auth)).status_code
        refused_options = {"url": public, "query": {"token": expired}, "transports": ["polling"]}
        async with open_client(nursery, node_command(), refused_options, name="late") as late:
            error = await late.expect("connect_error", timeout=CONNECT_TIMEOUT)
            assert error["data"]["code"] == "TOKEN_EXPIRED"
        await alice.send(op="close")
        await alice.expect("disconnect")


async def test_development_writes_text_lines_without_tokens(
    nursery: trio.Nursery, store: SQLiteStore, http: httpx.AsyncClient, restore_logging: None
) -> None:
    config = Config(port=0, jwt_secret=SECRET, emit_token=EMIT_TOKEN).check()
    out = io.StringIO()
    configure_for(config, out)
    hub = Hub(config, store)
    addresses: HubAddresses = await nursery.start(hub.serve)
    token = mint_token("alice", hub.auth)
    expired = mint_token("alice", hub.auth, expires_in=-30)
    await drive(nursery, http, addresses.url, addresses.internal_url, token, expired)
    with trio.fail_after(STEP_TIMEOUT):
        while "socket disconnected" not in out.getvalue():
            await trio.sleep(0.02)
    text = out.getvalue()
    assert_clean(text, token, expired, SECRET, EMIT_TOKEN)
    lines = text.splitlines()
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    (connected,) = [line for line in lines if "socket connected" in line]
    # The upgrade may finish while the connect handler still checks the token.
    assert re.search(
        r" INFO hub\.app: socket connected sid=\S+ user=alice transport=(polling|websocket)"
        r" connection=\S+ address=127\.0\.0\.1$",
        connected,
    ), connected
    assert any("connection upgraded" in line and "transport=websocket" in line for line in lines)
    assert any("connect refused: TOKEN_EXPIRED" in line for line in lines)
    assert sum(f"/internal/emit/{REDACTED}" in line for line in lines) == 2  # path, message
    assert any(f"/internal/{REDACTED}" in line for line in lines)


# -- hub serve in production: JSON lines ---------------------------------------------------------


class HubProcess:
    """``hub serve`` as a subprocess; what it writes to stderr, line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def read(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        while chunk := await self.process.stderr.receive_some():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self.lines += [line.decode() for line in complete]
            self._changed.set()
            self._changed = trio.Event()
        if pending:
            self.lines.append(pending.decode())

    async def wait_for(self, text: str, timeout: float = CONNECT_TIMEOUT) -> str:
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                await self._changed.wait()


async def test_hub_serve_in_production_writes_json_lines_without_tokens(
    nursery: trio.Nursery, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    store.add_user("alice", email="alice@example.test")
    token = mint_token("alice", SETTINGS)
    expired = mint_token("alice", SETTINGS, expires_in=-30)
    env = {
        **os.environ,
        "HUB_ENV": "production",
        "JWT_ACCESS_SECRET": SECRET,
        "HUB_EMIT_TOKEN": EMIT_TOKEN,
        "WS_ALLOWED_ORIGINS": "https://app.example.test",
        "HUB_DATABASE": str(tmp_path / "hub.sqlite3"),
    }
    for name in ("HUB_LOG_FORMAT", "NODE_ENV", "HUB_INTERNAL_PORT", "HUB_REDIS_URL"):
        env.pop(name, None)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "hub.cli", "serve", "--port", "0", "--internal-port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(CHECKOUT),
    )
    hub = HubProcess(process)
    nursery.start_soon(hub.read)
    try:
        started = await hub.wait_for("internal API on")
        ports = [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", started)]
        public, internal = (f"http://127.0.0.1:{port}" for port in ports)
        await drive(nursery, http, public, internal, token, expired)
        await hub.wait_for("socket disconnected", timeout=STEP_TIMEOUT)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            process.send_signal(signal.SIGINT)
            await process.wait()
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, hub.lines

    lines = [line for line in hub.lines if line.strip()]
    entries: list[dict[str, Any]] = []
    for line in lines:
        assert_clean(line, token, expired, SECRET, EMIT_TOKEN)
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        entries.append(entry)

    def find(message: str) -> list[dict[str, Any]]:
        return [entry for entry in entries if entry["message"] == message]

    (connected,) = find("socket connected")
    assert connected["user"] == "alice"
    assert connected["transport"] in ("polling", "websocket")  # the upgrade may come first
    assert connected["logger"] == "hub.app"
    (upgraded,) = find("connection upgraded")
    assert upgraded["connection"] == connected["connection"]
    assert upgraded["transport"] == "websocket"
    (disconnected,) = find("socket disconnected")
    assert disconnected["sid"] == connected["sid"]
    assert disconnected["user"] == "alice"
    assert disconnected["reason"] == "client namespace disconnect"
    (refused,) = find("connect refused: TOKEN_EXPIRED")
    assert refused["code"] == "TOKEN_EXPIRED"
    assert refused["address"] == "127.0.0.1"
    assert any(f"/internal/emit/{REDACTED}" in entry["message"] for entry in entries)
    assert any(f"/internal/{REDACTED}" in entry["message"] for entry in entries)
    # Nothing per message: the event the client received is in no line.
    assert not any("note" in entry["message"] for entry in entries)


def test_the_log_format_and_level_come_from_the_environment(restore_logging: None) -> None:
    production = Config.from_env({"HUB_ENV": "production"})
    out = io.StringIO()
    configure_for(production, out)
    logging.getLogger("hub.test").info("json by default in production")
    assert json.loads(out.getvalue())["message"] == "json by default in production"
    text = Config.from_env({"HUB_ENV": "production", "HUB_LOG_FORMAT": "Text"})
    assert text.log_format == "text"
    assert Config.from_env({"HUB_LOG_FORMAT": "json"}).log_format == "json"
    quiet = Config.from_env({"HUB_LOG_LEVEL": "warning"})
    out = io.StringIO()
    configure_for(quiet, out)
    logging.getLogger("hub.test").info("not written")
    logging.getLogger("hub.test").warning("written")
    assert out.getvalue().splitlines()[0].endswith("WARNING hub.test: written")
    with pytest.raises(ConfigError, match="HUB_LOG_FORMAT must be text or json"):
        Config.from_env({"HUB_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="HUB_LOG_LEVEL must be one of"):
        Config.from_env({"HUB_LOG_LEVEL": "loud"})
