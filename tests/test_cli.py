"""The ``hub`` command, run for real: ``python -m hub.cli`` in a subprocess, with an environment
that holds none of the hub's variables but a database in the test's temporary directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from support.sio import SID, RawSio

from hub.app.auth import AuthError, AuthSettings, verify_token
from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET
from hub.app.events import EVENTS, typescript

ROOT = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli"]
DEV = AuthSettings(secret=DEV_JWT_SECRET)
START = 10.0
"""The longest a started hub may take to say it listens."""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without the hub's variables, and a database in ``tmp_path``."""
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    return {**clean, "HUB_DATABASE": str(tmp_path / "hub.sqlite3")}


def hub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUB, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def succeeds(env: dict[str, str], *args: str) -> str:
    done = hub(env, *args)
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- the access store --------------------------------------------------------------------------


def test_the_store_commands_add_share_and_list(env: dict[str, str], tmp_path: Path) -> None:
    assert succeeds(env, "users", "add", "alice", "--email", "alice@example.com") == (
        "added user alice (alice@example.com)\n"
    )
    assert succeeds(env, "users", "add", "bob", "--disabled") == (
        "added user bob (no email, disabled)\n"
    )
    duplicate = hub(env, "users", "add", "alice")
    assert duplicate.returncode == 2
    assert duplicate.stdout == ""
    assert duplicate.stderr.startswith("hub: ")
    assert "alice" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr

    assert succeeds(env, "projects", "add", "p1", "--owner", "alice") == (
        "added project p1 owned by alice\n"
    )
    assert succeeds(env, "projects", "share", "p1", "--user", "bob") == (
        "shared project p1 with bob\n"
    )
    assert succeeds(env, "batches", "add", "b1", "--project", "p1") == (
        "added batch b1 to project p1\n"
    )
    assert succeeds(env, "users", "list") == (
        "alice\talice@example.com\tenabled\nbob\t-\tdisabled\n"
    )
    assert succeeds(env, "projects", "list") == "p1\towner=alice\tshared=bob\n"
    assert succeeds(env, "batches", "list") == "b1\tproject=p1\n"

    # --database wins over HUB_DATABASE
    other = str(tmp_path / "other.sqlite3")
    assert succeeds(env, "users", "list", "--database", other) == ""


# -- token -------------------------------------------------------------------------------------


def test_token_mints_a_development_token(env: dict[str, str]) -> None:
    before = time.time()
    token = succeeds(env, "token", "alice").strip()
    identity = verify_token(token, DEV)
    assert identity.user_id == "alice"
    assert identity.email is None
    assert identity.expires_at is not None
    assert before + 3600 - 5 <= identity.expires_at <= time.time() + 3600 + 5


def test_token_uses_the_configured_secret_and_options(env: dict[str, str]) -> None:
    secret = "a-configured-secret-0123456789abcdef0123"
    before = time.time()
    output = succeeds(
        {**env, "JWT_ACCESS_SECRET": secret},
        "token",
        "bob",
        "--email",
        "bob@example.com",
        "--expires-in",
        "60",
    )
    token = output.strip()
    assert output == token + "\n"
    identity = verify_token(token, AuthSettings(secret=secret))
    assert (identity.user_id, identity.email) == ("bob", "bob@example.com")
    assert identity.expires_at is not None
    assert before + 60 - 5 <= identity.expires_at <= time.time() + 60 + 5
    with pytest.raises(AuthError):
        verify_token(token, DEV)


def test_token_refuses_to_mint_in_production(env: dict[str, str]) -> None:
    production = {
        **env,
        "NODE_ENV": "production",
        "JWT_ACCESS_SECRET": "prod-secret-0123456789abcdef0123456789",
        "HUB_EMIT_TOKEN": "prod-emit-token",
        "WS_ALLOWED_ORIGINS": "https://app.example.com",
    }
    done = hub(production, "token", "alice")
    assert (done.returncode, done.stdout) == (2, "")
    assert "development tokens only" in done.stderr


# -- schema ------------------------------------------------------------------------------------


def test_schema_json_describes_every_event(env: dict[str, str]) -> None:
    document = json.loads(succeeds(env, "schema", "--format", "json"))
    assert set(document["properties"]) == set(EVENTS)
    for name, cls in EVENTS.items():
        assert document["properties"][name] == {"$ref": f"#/$defs/{cls.__name__}"}
        assert cls.__name__ in document["$defs"]


def test_schema_typescript_is_written_to_the_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "events.d.ts"
    assert succeeds(env, "schema", "--format", "typescript", "-o", str(path)) == ""
    text = path.read_text(encoding="utf-8")
    assert text == typescript()
    assert "ServerToClientEvents" in text
    for name in EVENTS:
        assert f'"{name}"' in text or f"'{name}'" in text, name


# -- serve -------------------------------------------------------------------------------------


def test_serve_in_production_without_secrets_exits_2_naming_them(env: dict[str, str]) -> None:
    done = hub({**env, "NODE_ENV": "production"}, "serve", "--port", str(free_port()))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("hub: ")
    for name in ("JWT_ACCESS_SECRET", "HUB_EMIT_TOKEN", "WS_ALLOWED_ORIGINS"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


class Output:
    """What a running process has written on one of its pipes so far."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.text = ""

    async def until(self, pattern: str) -> re.Match[str]:
        """Read until ``pattern`` matches (multi-line) what was written."""
        with trio.fail_after(START):
            while (match := re.search(pattern, self.text, re.MULTILINE)) is None:
                chunk = await self.stream.receive_some()
                assert chunk, f"end of output before {pattern!r}:\n{self.text}"
                self.text += chunk.decode()
        return match


LISTENING = r"internal API on http://\S+/internal/$"


def curl_request(command: str) -> tuple[str, dict[str, str], str]:
    """The URL, headers and body of the printed ``curl -s URL -H ... -d BODY``."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:2] == ["curl", "-s"], words
    url, headers, body = "", {}, ""
    rest = iter(words[2:])
    for word in rest:
        if word == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(rest)
        else:
            assert not url, words
            url = word
    return url, headers, body


async def test_serve_demo_prints_tokens_and_a_curl_that_works(
    env: dict[str, str], nursery: trio.Nursery
) -> None:
    port = free_port()
    process = await trio.lowlevel.open_process(
        [*HUB, "serve", "--demo", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = Output(process.stdout), Output(process.stderr)
        curl = await stdout.until(r"^\s*(curl -s (?:.*\n)*?\s*-d '[^']*')$")
        await stderr.until(LISTENING)

        tokens = dict(re.findall(r"^  (alice|bob|carol) +(\S+)$", stdout.text, re.MULTILINE))
        assert sorted(tokens) == ["alice", "bob", "carol"]
        for user, token in tokens.items():
            identity = verify_token(token, DEV)
            assert (identity.user_id, identity.email) == (user, f"{user}@example.com")

        url, headers, body = curl_request(curl[1])
        assert url == f"http://127.0.0.1:{port}/internal/emit"
        assert headers == {
            "Authorization": f"Bearer {DEV_EMIT_TOKEN}",
            "Content-Type": "application/json",
        }
        async with httpx.AsyncClient(verify=False, timeout=START) as http:
            response = await http.post(url, headers=headers, content=body)
            assert response.status_code == 200, response.text
            assert response.json() == {"delivered": 0}

            # bob's printed token connects, and the demo project is shared with him.
            bob = await RawSio.open(nursery, f"127.0.0.1:{port}")
            await bob.send("40" + json.dumps({"token": tokens["bob"]}))
            assert SID.fullmatch((await bob.receive_text())[2:])
            await bob.send('421["join-project",{"projectId":"demo"}]')
            assert await bob.receive_text() == '431[{"ok":true}]'
            response = await http.post(url, headers=headers, content=body)
            assert response.json() == {"delivered": 1}
            # The demo hub recovers connections: the event's last argument is its offset.
            name, data, offset = json.loads((await bob.receive_text())[2:])
            assert (name, data) == ("notification", json.loads(body)["data"])
            assert isinstance(offset, str)
            await bob.aclose()
    finally:
        process.kill()
        with trio.fail_after(START):
            await process.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started", ["plainly", "with SIGINT ignored"])
async def test_serve_stops_cleanly_on_ctrl_c(env: dict[str, str], started: str) -> None:
    # A shell's background job starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: hub serve must stop on it all the same.
    process = await trio.lowlevel.open_process(
        [*HUB, "serve", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_ignore_sigint if started != "plainly" else None,
    )
    try:
        stderr = Output(process.stderr)
        await stderr.until(LISTENING)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(START):
            returncode = await process.wait()
            while chunk := await stderr.stream.receive_some():
                stderr.text += chunk.decode()
    finally:
        process.kill()
        with trio.fail_after(START):
            await process.wait()
    # Exit 0, no traceback: `_run` catches KeyboardInterrupt, but trio raises it wrapped in a
    # BaseExceptionGroup (the hub's nursery), which only `except*` catches.
    assert (returncode, "Traceback" in stderr.text) == (0, False), stderr.text[-1500:]
