"""The security review, over the wire: who gets in, who may act, what anyone gets to read.

Every test runs a real hub on loopback (in process, or ``hub serve`` as a subprocess when its
log is what is checked) and attacks it the way a client or a caller on the network could:

1. the JWT attack matrix, in HS mode and in RS mode (RS256 with real keys made by
   ``cryptography``, two key ids): the stock socket.io-client sees ``connect_error`` with the
   code (``TOKEN_EXPIRED``, ``TOKEN_INVALID``, ``USER_NOT_FOUND``), is not connected, joined
   nothing, and the refusal holds no secret, no token, no traceback; then where the token is
   (auth, header, query), which place wins, and enormous tokens;
2. ``/internal/*`` (every endpoint, every method) with every wrong credential: 401 with the same
   few bytes, and nothing done; ``/metrics`` without the emit token; the Admin UI's ``/admin``
   and the production status page's ``/status`` without the right credentials;
3. foreign origins in production: refused on polling, on the WebSocket handshake and on an
   existing session (which loses nothing to them), never given ``Access-Control-Allow-Origin``;
4. hostile payloads and failing handlers: a clear ack error or nothing, never a traceback, and
   the other clients go on; an HTTP handler that fails answers 500 without a traceback;
5. ``hub serve`` (production JSON lines, development text lines, both at DEBUG) through a
   session that uses and abuses every credential: no token, no part of one, no secret and no
   traceback in any line.

The stock clients of a test run in one Node process (:data:`CROWD_JS`), each with its own
connection, so that a matrix of dozens of clients starts one Node, not dozens. Public-key
settings are put on the hub as :class:`~hub.app.auth.AuthSettings`: the configuration has no way
to name public keys yet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from interop.harness import (
    CHECKOUT,
    CONNECT_TIMEOUT,
    STEP_TIMEOUT,
    ClientProcess,
    node_command,
    open_client,
)
from support.hubs import hub_settings, websocket_handshake
from support.sio import SID, RawSio
from test_app_logs import HubProcess, restore_logging
from test_hub_clients import (  # the hub, its store and clients, shared with the client tests
    EMIT_TOKEN,
    SECRET,
    Running,
    store,
)

from hub.app.auth import MAX_TOKEN_LENGTH, AuthSettings
from hub.app.config import Environment
from hub.app.hub import Hub
from hub.app.logs import configure_for
from hub.app.status import install_tools
from hub.app.store import SQLiteStore
from hub.server import Socket
from hub.transport.http import Request, Response, WebSocket

__all__ = ["restore_logging", "store"]  # fixtures, used by name

Record = dict[str, Any]

ISSUER = "https://auth.example.test"
AUDIENCE = "hub"
APP_ORIGIN = "https://app.example.test"
INTERNAL_AUTH = {"Authorization": f"Bearer {EMIT_TOKEN}"}

# The codes a refused client reads in ``err.data.code``.
EXPIRED, INVALID, MISSING = "TOKEN_EXPIRED", "TOKEN_INVALID", "TOKEN_MISSING"
NO_USER = "USER_NOT_FOUND"

# What a client or a log line must never show: a Python traceback or what a failing library
# says about itself.
TRACE_MARKERS = ("Traceback", 'File "', ".py", "Error(", "PyJWT", "jwt.exceptions")


def assert_safe(text: str, *secrets: str) -> None:
    """``text`` holds no traceback and none of ``secrets`` (nor, for a token, a part of it)."""
    for marker in TRACE_MARKERS:
        assert marker not in text, (marker, text[:2000])
    for secret in secrets:
        for part in token_parts(secret):
            assert part not in text, (part, text[:2000])


def token_parts(token: str) -> list[str]:
    """A token and the base64url segments that carry something (its payload and signature):
    none may appear anywhere, even alone."""
    parts = [token]
    segments = token.split(".")
    if len(segments) == 3:
        parts += [segment for segment in segments[1:] if len(segment) >= 8]
    return [part for part in parts if part]


# -- tokens, made by hand ----------------------------------------------------------------------


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> Record:
    numbers = key.public_key().public_numbers()

    def integer(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": kid, "n": integer(numbers.n), "e": integer(numbers.e)}


K1 = _rsa_key()
K2 = _rsa_key()
ATTACKER = _rsa_key()
RS_SETTINGS = AuthSettings(
    algorithms=("RS256",),
    public_keys={"k1": public_pem(K1), "k2": public_pem(K2)},
    issuer=ISSUER,
    audience=AUDIENCE,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def hs(header: Record, claims: Any, key: str | bytes, digest: str = "sha256") -> str:
    """A token with an HMAC signature (whatever its header claims)."""
    key_bytes = key.encode() if isinstance(key, str) else key
    signing_input = f"{segment(header)}.{segment(claims)}"
    mac = hmac.new(key_bytes, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64(mac)}"


def rs(header: Record, claims: Any, key: rsa.RSAPrivateKey, *, pss: bool = False) -> str:
    """A token with an RSA signature, PKCS#1 v1.5 (RS256) or PSS (PS256), over SHA-256."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    scheme: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        if pss
        else padding.PKCS1v15()
    )
    signature = key.sign(signing_input.encode(), scheme, hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def unsigned(header: Record, claims: Any) -> str:
    return f"{segment(header)}.{segment(claims)}."


def claims(user: str, now: int, **changes: Any) -> Record:
    """Claims the hub accepts for ``user``; ``changes`` set or (with None) remove some."""
    values: Record = {
        "sub": user,
        "iat": now,
        "exp": now + 3600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "email": f"{user}@example.test",
    }
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


HS256 = {"alg": "HS256", "typ": "JWT"}


def rs_header(kid: str | None = "k1", **more: Any) -> Record:
    header: Record = {"alg": "RS256", "typ": "JWT", **more}
    if kid is not None:
        header["kid"] = kid
    return header


def hs_token(user: str, now: int, **changes: Any) -> str:
    return hs(HS256, claims(user, now, **changes), SECRET)


def rs_token(user: str, now: int, kid: str = "k1", **changes: Any) -> str:
    key = {"k1": K1, "k2": K2}[kid]
    return rs(rs_header(kid), claims(user, now, **changes), key)


def swap_payload(token: str, payload: Record) -> str:
    """The token with its payload replaced and its signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{segment(payload)}.{signature}"


def oversize(size: int) -> str:
    """A JWT-shaped string of ``size`` characters."""
    head = segment(HS256) + "."
    return head + "A" * (size - len(head) - 4) + ".AAA"


# -- the hub -----------------------------------------------------------------------------------


async def launch(
    nursery: trio.Nursery,
    store: SQLiteStore,
    *,
    auth: AuthSettings | None = None,
    prepare: Callable[[Hub], object] | None = None,
    **settings: Any,
) -> Running:
    """A hub on a free loopback port: HS256 with :data:`SECRET`, issuer and audience checked,
    recovery off; ``auth`` replaces its token settings, ``prepare`` runs before it serves."""
    checked = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    heartbeat = {"ping_interval": 5, "ping_timeout": 10}
    options = hub_settings(SECRET, EMIT_TOKEN, checked, heartbeat, settings)

    def ready(hub: Hub) -> None:
        if auth is not None:
            hub.auth = auth
        if prepare is not None:
            prepare(hub)

    return await Running.start(nursery, store, options, prepare=ready)


def socket_count(running: Running) -> int:
    return len(running.hub.server.main.sockets)


def user_rooms(running: Running) -> set[str]:
    """The main namespace's rooms, without each socket's own."""
    main = running.hub.server.main
    return {room for room in main.adapter.rooms if room not in main.sockets}


# Many stock clients in one Node process: each ``io()`` with ``forceNew`` has its own Manager and
# Engine.IO connection, as in separate tabs, and the machine starts one Node instead of dozens.
# Commands on stdin: {"op": "open", "case", "options", "namespace"}, {"op": "emit", "case",
# "event", "args", "tag", "timeout"} (an emit with an ack, given up after ``timeout`` ms). Each
# line it prints names its case; closing its stdin disconnects every client and ends it.
CROWD_JS = r"""
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const { url } = JSON.parse(process.argv[process.argv.length - 1]);
const sockets = new Map();
const print = (record) => process.stdout.write(JSON.stringify(record) + "\n");

function describe(description) {
  if (description === undefined || description === null) return null;
  if (typeof description === "number" || typeof description === "string") return description;
  if (description.message) return String(description.message);
  return String(description);
}

function open({ case: name, options, namespace = "" }) {
  const socket = io(url + namespace, { forceNew: true, reconnection: false, ...options });
  sockets.set(name, socket);
  socket.on("connect", () => print({ ev: "connect", case: name, id: socket.id }));
  socket.on("connect_error", (err) => {
    print({
      ev: "connect_error",
      case: name,
      message: err.message,
      data: err.data === undefined ? null : err.data,
      description: describe(err.description),
      active: socket.active,
    });
  });
  socket.on("disconnect", (reason) => print({ ev: "disconnect", case: name, reason }));
  socket.onAny((event, ...args) => print({ ev: "event", case: name, name: event, args }));
}

function emit({ case: name, event, args, tag, timeout }) {
  sockets.get(name).timeout(timeout).emitWithAck(event, ...args).then(
    (answer) => print({ ev: "ack", case: name, tag, args: [answer] }),
    (err) => print({ ev: "ack_error", case: name, tag, message: err.message }),
  );
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  if (command.op === "open") open(command);
  else if (command.op === "emit") emit(command);
});
lines.on("close", () => {
  for (const socket of sockets.values()) socket.disconnect();
  process.exit(0);
});
print({ ev: "started" });
"""


class Crowd:
    """Stock clients in one Node process (:data:`CROWD_JS`), each known by its case name."""

    def __init__(self, process: ClientProcess) -> None:
        self.process = process
        self._tags = itertools.count(1)

    async def open(self, case: str, options: Record, namespace: str = "") -> None:
        await self.process.send(op="open", case=case, options=options, namespace=namespace)

    async def expect(
        self, ev: str, case: str, timeout: float = STEP_TIMEOUT, **fields: Any
    ) -> Record:
        return await self.process.expect(ev, timeout=timeout, case=case, **fields)

    async def call(self, case: str, event: str, *args: Any, timeout: float = 4000) -> Record:
        """Emit with an ack; returns the ``ack`` (its ``args``) or ``ack_error`` line."""
        (answer,) = await self.calls([(case, event, list(args))], timeout=timeout)
        return answer

    async def calls(
        self, emits: Iterable[tuple[str, str, list[Any]]], *, timeout: float = 4000
    ) -> list[Record]:
        """Emits with an ack, ``(case, event, args)``, all sent at once; returns each one's
        ``ack`` or ``ack_error`` line (an ack not come within ``timeout`` ms), in order."""
        tags = []
        for case, event, args in emits:
            tag = next(self._tags)
            tags.append((case, tag))
            await self.process.send(
                op="emit", case=case, event=event, args=args, tag=tag, timeout=timeout
            )
        answers: list[Record] = []
        with trio.fail_after(timeout / 1000 + STEP_TIMEOUT):
            for case, tag in tags:
                while True:
                    lines = self.process.seen("ack", case=case, tag=tag)
                    lines += self.process.seen("ack_error", case=case, tag=tag)
                    if lines:
                        answers.append(lines[0])
                        break
                    await trio.sleep(0.02)
        return answers

    def lines(self, case: str) -> list[Record]:
        return [line for line in self.process.lines if line.get("case") == case]

    def seen(self, ev: str, case: str) -> list[Record]:
        return self.process.seen(ev, case=case)

    def events(self, case: str) -> list[str]:
        """What the case received, fences aside, as sorted JSON."""
        return sorted(
            json.dumps([line["name"], *line["args"]], sort_keys=True)
            for line in self.seen("event", case)
            if line["name"] != "fence"
        )

    async def fence(self, running: Running, cases: Iterable[str]) -> None:
        """Wait until every case has received all that was sent to it so far."""
        number = next(self._tags)
        running.hub.broadcast("fence", number)
        for case in cases:
            await self.expect("event", case, name="fence", args=[number])


@asynccontextmanager
async def crowd(nursery: trio.Nursery, url: str) -> AsyncIterator[Crowd]:
    node = node_command()[0]
    command = [node, "--input-type=module", "-e", CROWD_JS]
    async with open_client(nursery, command, {"url": url}, name="crowd") as process:
        await process.expect("started", timeout=CONNECT_TIMEOUT)
        yield Crowd(process)


async def open_all(people: Crowd, cases: Mapping[str, Record], namespace: str = "") -> None:
    for case, options in cases.items():
        await people.open(case, options, namespace)


async def outcomes(people: Crowd, cases: Iterable[str]) -> dict[str, Record]:
    """Each case's first ``connect`` or ``connect_error``."""
    found: dict[str, Record] = {}
    with trio.fail_after(CONNECT_TIMEOUT):
        for case in cases:
            while case not in found:
                lines = people.seen("connect", case) + people.seen("connect_error", case)
                if lines:
                    found[case] = lines[0]
                else:
                    await trio.sleep(0.02)
    return found


def assert_refused(people: Crowd, case: str, outcome: Record, code: str, *secrets: str) -> None:
    """The hub's refusal as the stock client reports it: ``err.data.code`` is ``code``, the
    message is the data's, the client stays disconnected, got nothing, and nothing it printed
    leaks."""
    lines = people.lines(case)
    assert outcome["ev"] == "connect_error", (case, lines)
    assert isinstance(outcome["data"], dict), (case, lines)
    assert outcome["data"]["code"] == code, (case, lines)
    assert set(outcome["data"]) == {"code", "message"}, (case, outcome)
    assert outcome["message"] == outcome["data"]["message"], (case, outcome)
    assert outcome["message"], (case, outcome)
    assert outcome["active"] is False, (case, lines)
    assert not people.seen("connect", case), (case, lines)
    assert not people.seen("event", case), (case, lines)
    said = [{key: value for key, value in line.items() if key != "case"} for line in lines]
    assert_safe(json.dumps(said), SECRET, EMIT_TOKEN, *secrets)


# -- 1. the JWT attack matrix -----------------------------------------------------------------


def hs_matrix(now: int) -> dict[str, tuple[str, str]]:
    """Attacks on a hub that verifies HS256 tokens: ``{case: (token, code)}``."""
    bob = hs_token("bob", now)
    return {
        "expired": (hs_token("alice", now, exp=now - 30), EXPIRED),
        "expired long ago": (hs_token("alice", now, iat=1, exp=2), EXPIRED),
        "not yet valid": (hs_token("alice", now, nbf=now + 600), INVALID),
        "issued in the future": (hs_token("alice", now, iat=now + 600), INVALID),
        "alg none": (unsigned({"alg": "none", "typ": "JWT"}, claims("alice", now)), INVALID),
        "alg None, signed": (
            hs({"alg": "None", "typ": "JWT"}, claims("alice", now), SECRET),
            INVALID,
        ),
        "alg nOnE": (unsigned({"alg": "nOnE"}, claims("alice", now)), INVALID),
        "alg missing": (hs({"typ": "JWT"}, claims("alice", now), SECRET), INVALID),
        "RS token to an HS hub": (rs_token("alice", now), INVALID),
        "HS256 keyed with a public key": (hs(HS256, claims("alice", now), public_pem(K1)), INVALID),
        "HS512 with the secret": (
            hs({"alg": "HS512", "typ": "JWT"}, claims("alice", now), SECRET, "sha512"),
            INVALID,
        ),
        "wrong secret": (
            hs(HS256, claims("alice", now), "not-the-secret-of-this-hub-at-all"),
            INVALID,
        ),
        "kid to /dev/null, empty key": (
            hs({**HS256, "kid": "../../../../dev/null"}, claims("alice", now), b""),
            INVALID,
        ),
        "wrong issuer": (hs_token("alice", now, iss="https://evil.example"), INVALID),
        "no issuer": (hs_token("alice", now, iss=None), INVALID),
        "wrong audience": (hs_token("alice", now, aud="another-service"), INVALID),
        "audience list without ours": (hs_token("alice", now, aud=["a", "b"]), INVALID),
        "no audience": (hs_token("alice", now, aud=None), INVALID),
        "tampered payload": (swap_payload(bob, claims("alice", now)), INVALID),
        "tampered header": (
            f"{segment({'alg': 'HS384', 'typ': 'JWT'})}.{bob.split('.', 1)[1]}",
            INVALID,
        ),
        "signature stripped": (bob.rsplit(".", 1)[0] + ".", INVALID),
        "crit header not understood": (
            hs({**HS256, "crit": ["exp-v2"], "exp-v2": 1}, claims("alice", now), SECRET),
            INVALID,
        ),
        "exp a string": (hs_token("alice", now, exp=str(now + 3600)), INVALID),
        "sub an object": (hs_token("alice", now, sub={"$ne": None}), INVALID),
        "unknown user": (hs_token("mallory", now), NO_USER),
        "disabled user": (hs_token("erin", now), NO_USER),
        "sub an SQL injection": (hs_token("alice' OR '1'='1", now), NO_USER),
        "garbage": ("not a token at all", INVALID),
        "three garbage parts": ("eyJ.eyJ.x", INVALID),
        "enormous (64 KB)": (oversize(64_000), INVALID),
        "enormous, signed": (hs_token("alice", now, pad="x" * MAX_TOKEN_LENGTH), INVALID),
    }


def rs_matrix(now: int, trap_url: str) -> dict[str, tuple[str, str]]:
    """Attacks on a hub that verifies RS256 tokens with keys ``k1`` and ``k2``. ``trap_url``
    is a listener that counts connections: a hub that fetched keys named by a token would
    call it."""
    bob = rs_token("bob", now)
    alice = claims("alice", now)
    return {
        "expired": (rs_token("alice", now, exp=now - 30), EXPIRED),
        "not yet valid": (rs_token("alice", now, nbf=now + 600), INVALID),
        "issued in the future": (rs_token("alice", now, iat=now + 600), INVALID),
        "alg none": (unsigned({"alg": "none", "kid": "k1"}, alice), INVALID),
        "alg none, RS signature kept": (
            f"{segment({'alg': 'none', 'kid': 'k1'})}.{bob.split('.', 1)[1]}",
            INVALID,
        ),
        "HS256 keyed with the public key": (
            hs({**HS256, "kid": "k1"}, alice, public_pem(K1)),
            INVALID,
        ),
        "HS256 keyed with the public key, no kid": (hs(HS256, alice, public_pem(K1)), INVALID),
        "HS256 keyed with the DER key": (
            hs(
                {**HS256, "kid": "k1"},
                alice,
                K1.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
            INVALID,
        ),
        "HS256 with the HS hub's secret": (hs({**HS256, "kid": "k1"}, alice, SECRET), INVALID),
        "PS256 with the right key": (
            rs({"alg": "PS256", "kid": "k1"}, alice, K1, pss=True),
            INVALID,
        ),
        "kid names no key": (rs(rs_header("k9"), alice, K1), INVALID),
        "kid a path": (rs(rs_header("../../../../dev/null"), alice, K1), INVALID),
        "kid empty": (rs(rs_header(""), alice, K1), INVALID),
        "no kid, two keys": (rs(rs_header(None), alice, K1), INVALID),
        "kid k1, signed by k2": (rs(rs_header("k1"), alice, K2), INVALID),
        "signed by an unknown key": (rs(rs_header("k1"), alice, ATTACKER), INVALID),
        "its own key in jwk": (
            rs(rs_header("k1", jwk=public_jwk(ATTACKER, "k1")), alice, ATTACKER),
            INVALID,
        ),
        "its own key at jku": (
            rs(rs_header("k1", jku=trap_url + "/jwks.json"), alice, ATTACKER),
            INVALID,
        ),
        "its own key at x5u": (
            rs(rs_header("k1", x5u=trap_url + "/cert.pem"), alice, ATTACKER),
            INVALID,
        ),
        "wrong issuer": (rs_token("alice", now, iss="https://evil.example"), INVALID),
        "wrong audience": (rs_token("alice", now, aud="another-service"), INVALID),
        "tampered payload": (swap_payload(bob, alice), INVALID),
        "signature of another token": (
            rs_token("alice", now + 1).rsplit(".", 1)[0] + "." + bob.rsplit(".", 1)[1],
            INVALID,
        ),
        "unknown user": (rs_token("mallory", now), NO_USER),
        "disabled user": (rs_token("erin", now, kid="k2"), NO_USER),
        "garbage": ("garbage", INVALID),
        "enormous (64 KB)": (oversize(64_000), INVALID),
    }


async def trap(nursery: trio.Nursery) -> tuple[str, list[str]]:
    """A listener standing in for an attacker's key server; returns its URL and the list that
    grows by one entry per connection it gets."""
    calls: list[str] = []

    async def answer(stream: trio.SocketStream) -> None:
        calls.append("connection")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, answer, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}", calls


@pytest.mark.parametrize("mode", ["hs", "rs"])
async def test_every_forged_or_unfit_token_is_refused_with_its_code(
    nursery: trio.Nursery, store: SQLiteStore, mode: str
) -> None:
    now = int(time.time())
    trap_url, trap_calls = await trap(nursery)
    if mode == "hs":
        running = await launch(nursery, store)
        matrix = hs_matrix(now)
        controls = {"alice": hs_token("alice", now)}
    else:
        running = await launch(nursery, store, auth=RS_SETTINGS)
        matrix = rs_matrix(now, trap_url)
        controls = {"alice": rs_token("alice", now), "bob": rs_token("bob", now, kid="k2")}
    tokens = [token for token, _ in matrix.values()] + list(controls.values())
    claimed = ("alice", "bob", "erin", "mallory", "alice' OR '1'='1")

    async with crowd(nursery, running.url) as people:
        await open_all(people, {user: {"auth": {"token": t}} for user, t in controls.items()})
        assert {o["ev"] for o in (await outcomes(people, controls)).values()} == {"connect"}
        await open_all(people, {case: {"auth": {"token": t}} for case, (t, _) in matrix.items()})
        refused = await outcomes(people, matrix)
        # Nobody refused is in any room: emits to the users they claimed reach the controls.
        async with running.emitter() as emitter:
            delivered = {
                user: await emitter.emit("probe", {"for": user}, to=[f"user:{user}"])
                for user in claimed
            }
        await people.fence(running, controls)
        got = {user: people.events(user) for user in controls}
        left = {user: people.seen("disconnect", user) for user in controls}
        connected = (set(running.hub.connections), socket_count(running), user_rooms(running))

    for case, (_, code) in matrix.items():
        assert_refused(people, case, refused[case], code, *tokens)
    assert connected == (set(controls), len(controls), {f"user:{user}" for user in controls})
    assert delivered == {user: int(user in controls) for user in claimed}
    assert got == {user: [json.dumps(["probe", {"for": user}])] for user in controls}
    assert left == {user: [] for user in controls}
    assert trap_calls == [], "the hub fetched a key that a token named"
    assert sum(running.hub.stats.refusals.values()) == len(matrix)


async def test_the_token_is_checked_wherever_it_is_sent_and_the_first_place_wins(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch(nursery, store)
    now = int(time.time())
    valid = hs_token("alice", now)
    forged = hs(HS256, claims("alice", now), "not-the-secret-of-this-hub-at-all")
    bad = {
        "forged": (forged, INVALID),
        "expired": (hs_token("alice", now, exp=now - 30), EXPIRED),
        "alg none": (unsigned({"alg": "none"}, claims("alice", now)), INVALID),
        "12 KB": (oversize(12_000), INVALID),
    }

    def bearer(token: str) -> Record:
        return {"Authorization": f"Bearer {token}"}

    places: dict[str, Callable[[str], Record]] = {
        "auth": lambda t: {"auth": {"token": t}},
        "auth bearer": lambda t: {"auth": {"token": f"Bearer {t}"}},
        "header, polling": lambda t: {"extraHeaders": bearer(t), "transports": ["polling"]},
        "header, websocket": lambda t: {"extraHeaders": bearer(t), "transports": ["websocket"]},
        "query, polling": lambda t: {"query": {"token": t}, "transports": ["polling"]},
        "query, websocket": lambda t: {"query": {"token": t}, "transports": ["websocket"]},
    }
    cases = {
        f"{kind} in {place}": (where(token), code)
        for kind, (token, code) in bad.items()
        for place, where in places.items()
    }
    # The first place that holds a token decides; a bad one is not made up for by the next.
    cases |= {
        "auth valid, header forged": (
            {"auth": {"token": valid}, "extraHeaders": bearer(forged)},
            "",
        ),
        "auth forged, header valid": (
            {"auth": {"token": forged}, "extraHeaders": bearer(valid)},
            INVALID,
        ),
        "auth forged, query valid": (
            {"auth": {"token": forged}, "query": {"token": valid}},
            INVALID,
        ),
        "header valid, query forged": (
            {"extraHeaders": bearer(valid), "query": {"token": forged}},
            "",
        ),
        "header forged, query valid": (
            {"extraHeaders": bearer(forged), "query": {"token": valid}},
            INVALID,
        ),
        "header Basic, valid": ({"extraHeaders": {"Authorization": f"Basic {valid}"}}, MISSING),
    }
    # Past the limit on a request's head (16 KB): a refusal of the request itself.
    too_big = {
        f"20 KB in {place}": where(oversize(20_000))
        for place, where in places.items()
        if place.startswith(("header", "query"))
    }
    async with crowd(nursery, running.url) as people:
        await open_all(people, {case: options for case, (options, _) in cases.items()})
        await open_all(people, too_big)
        seen = await outcomes(people, [*cases, *too_big])
        tabs = len(running.hub.connections.get("alice", {}))
        await open_all(people, {"afterwards": {"auth": {"token": valid}}})
        afterwards = await outcomes(people, ["afterwards"])

    tokens = [valid, forged, *(token for token, _ in bad.values())]
    for case, (_, code) in cases.items():
        if code:
            assert_refused(people, case, seen[case], code, *tokens)
        else:
            assert seen[case]["ev"] == "connect", people.lines(case)
    assert tabs == 2
    for case in too_big:
        outcome = seen[case]
        assert outcome["ev"] == "connect_error", people.lines(case)
        assert outcome["data"] is None, outcome
        assert "431" in str(outcome["description"]), outcome
        assert not people.seen("connect", case)
    assert afterwards["afterwards"]["ev"] == "connect"


def connect_error_frame(frame: str) -> tuple[str, str]:
    """The code and message of a CONNECT_ERROR frame, checked to hold nothing else."""
    assert frame.startswith("44{"), frame
    payload = json.loads(frame[2:])
    assert set(payload) == {"message", "data"}, frame
    assert set(payload["data"]) == {"code", "message"}, frame
    assert payload["message"] == payload["data"]["message"], frame
    return payload["data"]["code"], payload["message"]


async def test_a_refusal_on_the_wire_is_a_code_and_a_message(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch(nursery, store)
    host, port = running.addresses.public
    address = f"{host}:{port}"
    now = int(time.time())
    expired = hs_token("alice", now, exp=now - 30)
    forged = hs(HS256, claims("alice", now), "not-the-secret-of-this-hub-at-all")
    auths: dict[str, tuple[Any, str]] = {
        "forged": ({"token": forged}, INVALID),
        "expired": ({"token": expired}, EXPIRED),
        "no token": ({}, MISSING),
        "token null": ({"token": None}, MISSING),
        "token a number": ({"token": 12345}, MISSING),
        "token an object": ({"token": {"$gt": ""}}, MISSING),
        "token a list": ({"token": [forged]}, MISSING),
        "token 900 KB": ({"token": oversize(900_000)}, INVALID),
    }
    frames: dict[str, str] = {}
    for case, (auth, _) in auths.items():
        client = await RawSio.open(nursery, address)
        await client.send("40" + json.dumps(auth))
        frames[case] = await client.receive_text()
        await client.aclose()

    # A CONNECT over maxPayload, and one whose payload is not an object: the connection ends,
    # as the protocol says, with nothing said about the token.
    big = await RawSio.open(nursery, address)
    await big.send("40" + json.dumps({"token": oversize(1_200_000)}))
    big_code = await big.closed_code()
    not_object = await RawSio.open(nursery, address)
    await not_object.send("40" + json.dumps(expired))
    not_object_code = await not_object.closed_code()

    good = await RawSio.open(nursery, address)
    await good.send("40" + json.dumps({"token": hs_token("alice", now)}))
    answer = await good.receive_text()

    for case, (_, code) in auths.items():
        assert connect_error_frame(frames[case])[0] == code, (case, frames[case])
        assert_safe(frames[case], SECRET, EMIT_TOKEN, forged, expired)
    assert big_code == 1009
    assert not_object_code == 1000
    assert answer.startswith("40"), answer
    assert SID.fullmatch(answer[2:]), answer
    assert set(running.hub.connections) == {"alice"}


# -- 2. the internal API, /metrics, the Admin UI and the status page --------------------------

INTERNAL_ENDPOINTS: dict[str, Any] = {
    "emit": {"event": "note", "data": {"n": 1}, "to": ["user:alice"]},
    "broadcast": {"event": "note", "data": {"n": 2}},
    "rooms/join": {"userId": "alice", "rooms": ["project:garden"]},
    "rooms/leave": {"userId": "alice", "rooms": ["project:demo"]},
    "access/revoke": {"userId": "alice", "projectId": "demo"},
    "users/alice/disconnect": None,
    "users/alice/sockets": None,
    "connections": None,
    "no/such/endpoint": None,
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
SAMPLE_CREDENTIALS = ("none", "last byte off", "one byte more", "in the query")
UNAUTHORIZED = b'{"error":{"code":"UNAUTHORIZED","message":"missing or wrong bearer token"}}'


def one_byte_off(token: str, index: int) -> str:
    index %= len(token)
    return token[:index] + chr(ord(token[index]) ^ 1) + token[index + 1 :]


def wrong_credentials(user_token: str) -> dict[str, tuple[list[tuple[str, str]], str]]:
    """Every way of not quite having the emit token: ``{case: (headers, query string)}``."""

    def bearer(token: str) -> tuple[list[tuple[str, str]], str]:
        return [("Authorization", f"Bearer {token}")], ""

    basic = base64.b64encode(f"hub:{EMIT_TOKEN}".encode()).decode()
    return {
        "none": ([], ""),
        "bearer alone": ([("Authorization", "Bearer")], ""),
        "wrong": bearer("wrong-token"),
        "first byte off": bearer(one_byte_off(EMIT_TOKEN, 0)),
        "middle byte off": bearer(one_byte_off(EMIT_TOKEN, len(EMIT_TOKEN) // 2)),
        "last byte off": bearer(one_byte_off(EMIT_TOKEN, -1)),
        "one byte short": bearer(EMIT_TOKEN[:-1]),
        "one byte more": bearer(EMIT_TOKEN + "x"),
        "twice as long": bearer(EMIT_TOKEN * 2),
        "in the query": ([], f"token={EMIT_TOKEN}"),
        "in the query as access_token": ([], f"access_token={EMIT_TOKEN}"),
        "without a scheme": ([("Authorization", EMIT_TOKEN)], ""),
        "Basic": ([("Authorization", f"Basic {EMIT_TOKEN}")], ""),
        "Basic, base64": ([("Authorization", f"Basic {basic}")], ""),
        "in X-Api-Key": ([("X-Api-Key", EMIT_TOKEN)], ""),
        "in a cookie": ([("Cookie", f"token={EMIT_TOKEN}")], ""),
        "a user's JWT": bearer(user_token),
        "wrong, then right": (
            [("Authorization", "Bearer wrong-token"), ("Authorization", f"Bearer {EMIT_TOKEN}")],
            "",
        ),
    }


@pytest.mark.parametrize("internal_port", [None, 0], ids=["public-port", "own-port"])
async def test_the_internal_api_does_nothing_without_the_exact_emit_token(
    nursery: trio.Nursery, store: SQLiteStore, internal_port: int | None
) -> None:
    running = await launch(nursery, store, internal_port=internal_port)
    now = int(time.time())
    base = running.addresses.internal_url + "/internal/"
    answers: dict[tuple[str, str, str], httpx.Response | None] = {}
    users = ("alice", "bob")
    async with crowd(nursery, running.url) as people:
        await open_all(people, {user: {"auth": {"token": hs_token(user, now)}} for user in users})
        assert {o["ev"] for o in (await outcomes(people, users)).values()} == {"connect"}
        joined = await people.call("alice", "join-project", {"projectId": "demo"})
        async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
            credentials = wrong_credentials(hs_token("alice", now))
            if internal_port is not None:  # the same code behind another port: a sample
                credentials = {k: credentials[k] for k in SAMPLE_CREDENTIALS}
            for case, (headers, query) in credentials.items():
                for path, body in INTERNAL_ENDPOINTS.items():
                    for method in METHODS:
                        content = b"" if body is None else json.dumps(body).encode()
                        try:
                            answers[case, path, method] = await http.request(
                                method,
                                base + path + (f"?{query}" if query else ""),
                                headers=[*headers, ("Content-Type", "application/json")],
                                content=content,
                            )
                        except httpx.RemoteProtocolError:
                            answers[case, path, method] = None  # closed without an answer
            let_through = [k for k, r in answers.items() if r is not None and r.status_code != 401]
            assert let_through == []
            await people.fence(running, users)
            listed = await http.get(base + "users/alice/sockets", headers=INTERNAL_AUTH)
            counted = await http.get(base + "connections", headers=INTERNAL_AUTH)
        got = {user: people.events(user) for user in users}
        left = {user: people.seen("disconnect", user) for user in users}

    assert joined["args"] == [{"ok": True}]
    # 401 before anything else (no 404 or 405 telling what exists), always the same bytes; a
    # HEAD gets the same head without the body.
    for (case, path, method), response in answers.items():
        where = (case, path, method)
        assert response is not None, where
        assert response.status_code == 401, where
        assert response.content == (b"" if method == "HEAD" else UNAUTHORIZED), where
        assert response.headers["content-type"] == "application/json", where
        assert "allow" not in response.headers, where
        assert no_cors(response), where
    shapes = {tuple(sorted(r.headers)) for r in answers.values() if r is not None}
    assert len(shapes) == 1, shapes
    # Nothing was done: nothing delivered, nobody disconnected, no room changed.
    assert got == {"alice": [], "bob": []}
    assert left == {"alice": [], "bob": []}
    (socket,) = listed.json()["sockets"]
    assert "project:demo" in socket["rooms"]
    assert "project:garden" not in socket["rooms"]
    assert counted.json() == {"users": 2, "sockets": 2}
    assert running.hub.stats.emits == 0


async def test_metrics_on_the_public_port_need_the_emit_token(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch(nursery, store)
    separate = await launch(nursery, store, internal_port=0)
    url = running.url + "/metrics"
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        refused = {
            case: await http.get(url + (f"?{query}" if query else ""), headers=headers)
            for case, (headers, query) in wrong_credentials(hs_token("alice", 0)).items()
        }
        allowed = await http.get(url, headers=INTERNAL_AUTH)
        health = await http.get(running.url + "/health")
        public_of_separate = await http.get(separate.url + "/metrics", headers=INTERNAL_AUTH)
    for case, response in refused.items():
        assert response.status_code == 401, case
        assert response.content == UNAUTHORIZED, case
        assert b"hub_" not in response.content
    assert allowed.status_code == 200
    assert b"\nhub_" in allowed.content
    assert health.json() == {"status": "ok"}
    assert public_of_separate.status_code == 404


ADMIN_USER = "operator"
ADMIN_PASSWORD = "correct horse battery staple 8b1f"
ADMIN_HASH = bcrypt.hashpw(ADMIN_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
ADMIN_ENVIRON = {
    "HUB_ADMIN_USERNAME": ADMIN_USER,
    "HUB_ADMIN_PASSWORD_HASH": ADMIN_HASH,
    "HUB_STATUS_PAGE": "1",
}


async def launch_in_production(nursery: trio.Nursery, store: SQLiteStore) -> Running:
    """A production hub that allows :data:`APP_ORIGIN` only, with the Admin UI and the status
    page of :data:`ADMIN_ENVIRON`."""
    return await launch(
        nursery,
        store,
        env=Environment.PRODUCTION,
        allowed_origins=(APP_ORIGIN,),
        prepare=lambda hub: install_tools(hub, ADMIN_ENVIRON),
    )


async def test_the_admin_and_status_namespaces_need_the_admin_credentials(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch_in_production(nursery, store)
    user_token = hs_token("alice", int(time.time()))
    wrong: dict[str, tuple[Record, str]] = {
        "nothing": ({}, "CREDENTIALS_REQUIRED"),
        "wrong password": ({"username": ADMIN_USER, "password": "wrong"}, "INVALID_CREDENTIALS"),
        "wrong user": ({"username": "admin", "password": ADMIN_PASSWORD}, "INVALID_CREDENTIALS"),
        "password one short": (
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD[:-1]},
            "INVALID_CREDENTIALS",
        ),
        "password one more": (
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD + "x"},
            "INVALID_CREDENTIALS",
        ),
        "the hash as password": (
            {"username": ADMIN_USER, "password": ADMIN_HASH},
            "INVALID_CREDENTIALS",
        ),
        "empty password": ({"username": ADMIN_USER, "password": ""}, "INVALID_CREDENTIALS"),
        "the development default": (
            {"username": "admin", "password": "admin"},
            "INVALID_CREDENTIALS",
        ),
        "password an object": (
            {"username": ADMIN_USER, "password": {"$ne": ""}},
            "CREDENTIALS_REQUIRED",
        ),
        "a forged session": ({"sessionId": "0" * 32}, "SESSION_EXPIRED"),
        "a user's JWT": ({"token": user_token}, "CREDENTIALS_REQUIRED"),
    }
    right = {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
    namespaces = {"/admin": "config", "/status": "stats"}
    async with crowd(nursery, running.url) as people:
        for namespace in namespaces:
            cases = {f"{namespace} {case}": {"auth": auth} for case, (auth, _) in wrong.items()}
            await open_all(people, cases, namespace)
            await people.open(f"{namespace} right", {"auth": right}, namespace)
        await people.open("main with the admin's credentials", {"auth": right})
        seen = await outcomes(
            people,
            [f"{ns} {case}" for ns in namespaces for case in [*wrong, "right"]]
            + ["main with the admin's credentials"],
        )
        for namespace, event in namespaces.items():
            await people.expect("event", f"{namespace} right", name=event)
        # A second of stats pushes to whoever is in /status.
        await people.expect("event", "/status right", name="stats", timeout=3)
        refused_got = {
            f"{ns} {case}": people.seen("event", f"{ns} {case}")
            for ns in namespaces
            for case in wrong
        }

    for namespace in namespaces:
        assert seen[f"{namespace} right"]["ev"] == "connect"
        for case, (_, code) in wrong.items():
            name = f"{namespace} {case}"
            outcome = seen[name]
            assert outcome["ev"] == "connect_error", people.lines(name)
            assert outcome["data"]["code"] == code, people.lines(name)
            assert outcome["active"] is False
            said = json.dumps(
                [{k: v for k, v in line.items() if k != "case"} for line in people.lines(name)]
            )
            assert_safe(said, ADMIN_PASSWORD, ADMIN_HASH, SECRET, EMIT_TOKEN, user_token)
    assert refused_got == {case: [] for case in refused_got}
    main = seen["main with the admin's credentials"]
    assert (main["ev"], main["data"]["code"]) == ("connect_error", MISSING)


# -- 3. origins ------------------------------------------------------------------------------

FOREIGN_ORIGINS = (
    "https://evil.example",
    "https://app.example.test.evil.example",
    "https://evilapp.example.test",
    "http://app.example.test",
    "https://app.example.test:8443",
    "https://APP.EXAMPLE.TEST",
    "https://app.example.test.",
    "null",
    "http://localhost:5173",
    "https://app.example.test, https://evil.example",
)
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials")


def no_cors(response: httpx.Response) -> bool:
    return not any(name in response.headers for name in CORS_HEADERS)


async def test_foreign_origins_are_refused_and_read_nothing_in_production(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch_in_production(nursery, store)
    url = running.url
    endpoint = url + "/socket.io/?EIO=4&transport=polling"
    token = hs_token("alice", int(time.time()))
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        mine = {"Origin": APP_ORIGIN}
        opened = await http.get(endpoint, headers=mine)
        sid = json.loads(opened.text[1:])["sid"]
        session = f"{endpoint}&sid={sid}"
        assert (
            await http.post(session, content="40" + json.dumps({"token": token}), headers=mine)
        ).text == "ok"
        connected = await http.get(session, headers=mine)
        assert connected.text.startswith("40{"), connected.text
        delivered = running.hub.emit_to_user("alice", "note", {"n": 1})  # waits in the session

        results: dict[tuple[str, str], int] = {}
        cors_free: dict[tuple[str, str], bool] = {}
        for origin in FOREIGN_ORIGINS:
            theirs = {"Origin": origin}
            asking = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x",
            }
            requests: dict[str, tuple[str, str, Mapping[str, str], str]] = {
                "handshake": ("GET", endpoint, theirs, ""),
                "preflight": ("OPTIONS", endpoint, {**theirs, **asking}, ""),
                "poll of the session": ("GET", session, theirs, ""),
                "post to the session": ("POST", session, theirs, "41"),
                "internal API": ("GET", url + "/internal/connections", theirs | INTERNAL_AUTH, ""),
                "internal preflight": ("OPTIONS", url + "/internal/emit", {**theirs, **asking}, ""),
                "metrics": ("GET", url + "/metrics", theirs | INTERNAL_AUTH, ""),
                "status page": ("GET", url + "/", theirs, ""),
            }
            for what, (method, target, headers, content) in requests.items():
                response = await http.request(method, target, headers=headers, content=content)
                results[origin, what] = response.status_code
                cors_free[origin, what] = no_cors(response)
            results[origin, "websocket"] = await websocket_handshake(url, origin)
            results[origin, "upgrade of the session"] = await websocket_handshake(url, origin, sid)
        # The session lost nothing to them: the event waits for its own origin's poll.
        polled = await http.get(session, headers=mine)

    refused_everywhere = (
        "handshake",
        "preflight",
        "poll of the session",
        "post to the session",
        "websocket",
        "upgrade of the session",
    )
    for origin in FOREIGN_ORIGINS:
        for what in refused_everywhere:
            assert results[origin, what] == 403, (origin, what)
    assert all(cors_free.values()), [key for key, free in cors_free.items() if not free]
    assert delivered == 1
    assert polled.text == '42["note",{"n":1}]', polled.text
    assert polled.headers["access-control-allow-origin"] == APP_ORIGIN
    assert set(running.hub.connections) == {"alice"}


# -- 4. no traceback to a client ---------------------------------------------------------------

FAILURE = f"a handler failed holding {SECRET} and {EMIT_TOKEN}"


class Exploding:
    """An HTTP app whose every handler fails (a bug): what reaches the client?"""

    async def handle_http(self, request: Request) -> Response:
        raise RuntimeError(FAILURE)

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        raise RuntimeError(FAILURE)


def arm(hub: Hub) -> None:
    """Handlers that fail: an event handler (sync and async), a namespace's middleware, and an
    HTTP route."""

    def explode(socket: Socket, *args: Any) -> None:
        raise RuntimeError(FAILURE)

    async def explode_later(socket: Socket, *args: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError(FAILURE)

    async def refuse_badly(socket: Socket, auth: Record) -> None:
        raise RuntimeError(FAILURE)

    hub.server.on("explode", explode)
    hub.server.on("explode-later", explode_later)
    hub.server.of("/broken").use(refuse_badly)
    hub.server.route("/explode/", Exploding())


def nested(levels: int) -> Any:
    value: Any = "demo"
    for _ in range(levels):
        value = {"projectId": value}
    return value


def hostile_calls(now: int) -> dict[str, tuple[str, list[Any], str]]:
    """Events with payloads a hostile client sends: ``{case: (event, args, code answered)}``."""
    forged = hs(HS256, claims("alice", now), "not-the-secret-of-this-hub-at-all")
    bad = "INVALID_PAYLOAD"
    return {
        "join, a string": ("join-project", ["demo"], bad),
        "join, a list": ("join-project", [["demo"]], bad),
        "join, a number": ("join-project", [42], bad),
        "join, null": ("join-project", [None], bad),
        "join, true": ("join-project", [True], bad),
        "join, no argument": ("join-project", [], bad),
        "join, {}": ("join-project", [{}], bad),
        "join, id null": ("join-project", [{"projectId": None}], bad),
        "join, id an operator": ("join-project", [{"projectId": {"$gt": ""}}], bad),
        "join, id a list": ("join-project", [{"projectId": ["demo"]}], bad),
        "join, id a boolean": ("join-project", [{"projectId": True}], bad),
        "join, id a float": ("join-project", [{"projectId": 1.5}], bad),
        "join, id 201 characters": ("join-project", [{"projectId": "d" * 201}], bad),
        "join, id 500 KB": ("join-project", [{"projectId": "d" * 500_000}], bad),
        "join, id nested 100 deep": ("join-project", [nested(100)], bad),
        "join, id with NUL": ("join-project", [{"projectId": "demo\u0000"}], "FORBIDDEN"),
        "join, id a path": ("join-project", [{"projectId": "../demo"}], "FORBIDDEN"),
        "join, id an SQL injection": (
            "join-project",
            [{"projectId": "demo' OR '1'='1"}],
            "FORBIDDEN",
        ),
        "join, another's project": ("join-project", [{"projectId": "garden"}], "FORBIDDEN"),
        "join, __proto__": (
            "join-project",
            [{"projectId": "garden", "__proto__": {"ok": True}, "constructor": {}}],
            "FORBIDDEN",
        ),
        "join batch, a string": ("join-batch", ["b1"], bad),
        "join batch, an operator": ("join-batch", [{"batchId": {"$ne": None}}], bad),
        "join batch, another's": ("join-batch", [{"batchId": "b2"}], "FORBIDDEN"),
        "join batch, a path": ("join-batch", [{"batchId": "../b1"}], "NOT_FOUND"),
        "leave, a number": ("leave-project", [42], bad),
        "leave batch, null": ("leave-batch", [None], bad),
        "refresh, nothing": ("refresh-token", [], MISSING),
        "refresh, a number": ("refresh-token", [42], MISSING),
        "refresh, garbage": ("refresh-token", ["garbage"], INVALID),
        "refresh, token an object": ("refresh-token", [{"token": {"a": 1}}], MISSING),
        "refresh, 100 KB": ("refresh-token", [{"token": "x" * 100_000}], INVALID),
        "refresh, forged": ("refresh-token", [{"token": forged}], INVALID),
        "refresh, alg none": (
            "refresh-token",
            [{"token": unsigned({"alg": "none"}, claims("alice", now))}],
            INVALID,
        ),
        "refresh, another user's": ("refresh-token", [{"token": hs_token("bob", now)}], INVALID),
        "refresh, expired": (
            "refresh-token",
            [{"token": hs_token("alice", now, exp=now - 30)}],
            EXPIRED,
        ),
    }


async def until_closed(raw: RawSio) -> tuple[list[str | bytes], int]:
    """What the server sends until it closes the WebSocket, and its close code."""
    frames: list[str | bytes] = []
    reason: trio_websocket.CloseReason | None = None
    with trio.fail_after(STEP_TIMEOUT):
        while reason is None:
            try:
                frames.append(await raw.ws.get_message())
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
    return frames, reason.code


# Frames the stock client would never send; each ends its connection as the protocol says.
BROKEN_FRAMES = {
    "a number out of range": '4210["join-project",1e999]',
    "nested too deep": '42["join-project",' + "[" * 200 + "]" * 200 + "]",
    "invalid JSON": '42["join-project"',
    "not an array": '42{"projectId":"demo"}',
    "name not a string": "42[42]",
    "a reserved name": '42["connect"]',
    "ack id too large": '4299999999999999999["join-project",{}]',
    "a lone surrogate": '42["join-project",{"projectId":"\\ud800"}]',
    "unknown packet type": '9["join-project"]',
    "over maxPayload": '42["join-project","' + "x" * 1_100_000 + '"]',
}


async def test_hostile_payloads_get_a_clear_answer_or_nothing_and_hurt_no_one(
    nursery: trio.Nursery, store: SQLiteStore, restore_logging: None
) -> None:
    running = await launch(nursery, store, prepare=arm)
    out = io.StringIO()
    configure_for(running.hub.config, out)
    host, port = running.addresses.public
    now = int(time.time())
    calls = hostile_calls(now)
    # Answered or not (the hub's handlers take one argument), never with a traceback.
    maybe: dict[str, tuple[str, list[Any]]] = {
        "join, two arguments": ("join-project", [{"projectId": "demo"}, "more"]),
        "refresh, two arguments": ("refresh-token", [{"token": "x"}, {"token": "y"}]),
    }
    # Nobody answers: an event without a handler, handlers that fail.
    silent: dict[str, tuple[str, list[Any]]] = {
        "no such event": ("no-such-event", [{}]),
        "a failing handler": ("explode", [{}]),
        "a failing async handler": ("explode-later", [{}]),
    }
    async with crowd(nursery, running.url) as people:
        await open_all(
            people, {user: {"auth": {"token": hs_token(user, now)}} for user in ("alice", "bob")}
        )
        await people.open(
            "broken namespace", {"auth": {"token": hs_token("alice", now)}}, "/broken"
        )
        seen = await outcomes(people, ["alice", "bob", "broken namespace"])
        joined = await people.call("bob", "join-project", {"projectId": "demo"})
        answers = await people.calls(
            [("alice", event, args) for event, args, _ in calls.values()], timeout=8000
        )
        unanswered = await people.calls(
            [("alice", event, args) for event, args in [*maybe.values(), *silent.values()]],
            timeout=1500,
        )
        maybe_answers, silent_answers = unanswered[: len(maybe)], unanswered[len(maybe) :]
        # Frames no stock client sends, each on a connection of its own.
        broken: dict[str, tuple[list[str | bytes], int]] = {}
        for case, frame in BROKEN_FRAMES.items():
            raw = await RawSio.open(nursery, f"{host}:{port}")
            await raw.send("40" + json.dumps({"token": hs_token("carol", now)}))
            assert (await raw.receive_text()).startswith("40{")
            await raw.send(frame)
            broken[case] = await until_closed(raw)
        # The others go on: alice still joins, bob gets what is sent to his project.
        after = await people.call("alice", "join-project", {"projectId": "demo"})
        delivered = running.hub.emit("note", {"n": 1}, to=["project:demo"])
        await people.fence(running, ["alice", "bob"])
        got = {user: people.events(user) for user in ("alice", "bob")}
        left = {user: people.seen("disconnect", user) for user in ("alice", "bob")}

    tokens = [
        arg["token"]
        for _, args, _ in calls.values()
        for arg in args
        if isinstance(arg, dict) and isinstance(arg.get("token"), str)
    ]
    assert seen["alice"]["ev"] == seen["bob"]["ev"] == "connect"
    assert joined["args"] == [{"ok": True}]
    for (case, (_, _, code)), line in zip(calls.items(), answers, strict=True):
        assert line["ev"] == "ack", (case, line)
        (answer,) = line["args"]
        assert answer["ok"] is False, (case, answer)
        assert set(answer) == {"ok", "error"}, (case, answer)
        assert set(answer["error"]) == {"code", "message"}, (case, answer)
        assert answer["error"]["code"] == code, (case, answer)
        assert len(json.dumps(answer)) < 400, (case, "an answer the size of the input")
        assert_safe(json.dumps(answer), SECRET, EMIT_TOKEN, *tokens)
    for case, line in zip(maybe, maybe_answers, strict=True):
        assert line["ev"] in ("ack", "ack_error"), (case, line)
        assert_safe(json.dumps(line), SECRET, EMIT_TOKEN)
    for case, line in zip(silent, silent_answers, strict=True):
        assert (line["ev"], line["message"]) == ("ack_error", "operation has timed out"), case
    broken_namespace = seen["broken namespace"]
    assert broken_namespace["ev"] == "connect_error"
    assert broken_namespace["message"] == "Internal server error"
    assert_safe(json.dumps(people.lines("broken namespace")), SECRET, EMIT_TOKEN)
    for case, (frames, close_code) in broken.items():
        assert close_code in (1000, 1002, 1009), (case, close_code)
        assert_safe(repr(frames), SECRET, EMIT_TOKEN)
    assert after["args"] == [{"ok": True}]
    assert delivered == 2
    assert got == {user: [json.dumps(["note", {"n": 1}])] for user in ("alice", "bob")}
    assert left == {"alice": [], "bob": []}
    # The failing handlers are bugs: logged with their traceback, the secrets hidden in it.
    log = out.getvalue()
    assert log.count("RuntimeError: a handler failed holding [redacted] and [redacted]") >= 3, log
    assert SECRET not in log
    assert EMIT_TOKEN not in log


async def test_a_failing_http_handler_answers_500_without_a_traceback(
    nursery: trio.Nursery, store: SQLiteStore, restore_logging: None
) -> None:
    running = await launch(nursery, store, prepare=arm)
    out = io.StringIO()
    configure_for(running.hub.config, out)
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        answers = {
            method: await http.request(method, running.url + "/explode/x")
            for method in ("GET", "POST", "DELETE")
        }
        health = await http.get(running.url + "/health")
    target = running.url.replace("http://", "ws://", 1) + "/explode/"
    with trio.fail_after(STEP_TIMEOUT):
        try:
            async with trio_websocket.open_websocket_url(target):
                raise AssertionError("the failing WebSocket handler accepted")
        except trio_websocket.ConnectionRejected as exc:
            rejected = (exc.status_code, exc.body or b"")
    for method, response in answers.items():
        assert (response.status_code, response.text) == (500, "internal server error"), method
    assert rejected == (500, b"internal server error")
    assert health.status_code == 200
    log = out.getvalue()
    assert "Traceback" in log, log
    assert SECRET not in log
    assert EMIT_TOKEN not in log


async def exchange(address: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    """Send raw bytes as a request; returns the status and body of the answer."""
    stream = await trio.open_tcp_stream(*address)
    answer = b""
    with trio.move_on_after(STEP_TIMEOUT):
        await stream.send_all(request)
        while chunk := await stream.receive_some():
            answer += chunk
    await stream.aclose()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


def http_request(target: str, *headers: str, body: bytes = b"", method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: hub.test", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_malformed_http_requests_get_a_plain_refusal(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await launch(nursery, store, prepare=lambda hub: install_tools(hub, {}))
    bearer = f"Authorization: Bearer {EMIT_TOKEN}"
    version_8 = (
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    sio = "/socket.io/?EIO=4"
    cases: dict[str, tuple[bytes, int]] = {
        "Engine.IO 3": (http_request("/socket.io/?EIO=3&transport=polling"), 400),
        "unknown transport": (http_request(f"{sio}&transport=pigeon"), 400),
        "unknown session": (http_request(f"{sio}&transport=polling&sid=nope"), 400),
        "POST without a session": (
            http_request(
                f"{sio}&transport=polling", "Content-Length: 2", body=b"40", method="POST"
            ),
            400,
        ),
        "path traversal": (http_request("/static/../../hub/app/auth.py"), 404),
        "encoded traversal": (http_request("/static/..%2f..%2fhub%2fapp%2fauth.py"), 404),
        "NUL in the path": (http_request("/static/%00"), 404),
        "not UTF-8 in the path": (http_request("/static/%ff%fe"), 404),
        "odd user id": (http_request("/internal/users/%ff%00%2e%2e/sockets", bearer), 200),
        "bad chunk": (
            http_request(
                "/internal/emit",
                bearer,
                "Transfer-Encoding: chunked",
                body=b"zz\r\n",
                method="POST",
            ),
            400,
        ),
        "two Content-Lengths": (
            http_request(
                "/internal/emit",
                bearer,
                "Content-Length: 2",
                "Content-Length: 3",
                body=b"{}",
                method="POST",
            ),
            400,
        ),
        "a header line without a colon": (http_request("/", "Bad Header"), 400),
        "garbage": (b"GARBAGE\r\n\r\n", 400),
        "a control byte in the method": (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "request line of 20 KB": (http_request("/" + "a" * 20_000), 431),
        "header of 20 KB": (http_request("/", "X-A: " + "a" * 20_000), 431),
        "WebSocket version 8": (http_request(f"{sio}&transport=websocket", *version_8), 400),
    }
    answers = {
        case: await exchange(running.addresses.public, request)
        for case, (request, _) in cases.items()
    }
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        health = await http.get(running.url + "/health")
    assert {case: status for case, (status, _) in answers.items()} == {
        case: status for case, (_, status) in cases.items()
    }
    for case, (_, body) in answers.items():
        assert_safe(body.decode("latin-1"), SECRET, EMIT_TOKEN)
        assert b"import " not in body, case  # no file from outside the static folder
    assert health.status_code == 200


# -- 5. no token in any log ----------------------------------------------------------------------

LOG_SECRET = "security-review-jwt-secret-5f0c2a9e7b14"
LOG_EMIT_TOKEN = "security-review-emit-token-c41d8e03"


def serve_environ(tmp_path: Path, production: bool, log_format: str) -> dict[str, str]:
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HUB_", "JWT_", "WS_")) and name != "NODE_ENV"
    }
    environ |= {
        "HUB_ENV": "production" if production else "development",
        "JWT_ACCESS_SECRET": LOG_SECRET,
        "HUB_EMIT_TOKEN": LOG_EMIT_TOKEN,
        "HUB_DATABASE": str(tmp_path / "hub.sqlite3"),
        "HUB_LOG_FORMAT": log_format,
        "HUB_LOG_LEVEL": "DEBUG",
        **ADMIN_ENVIRON,
    }
    if production:
        environ["WS_ALLOWED_ORIGINS"] = APP_ORIGIN
    return environ


@pytest.mark.parametrize(
    ("production", "log_format"),
    [
        pytest.param(True, "json", id="production-json"),
        pytest.param(False, "text", id="development-text"),
    ],
)
async def test_no_token_secret_or_traceback_reaches_the_log(
    nursery: trio.Nursery, tmp_path: Path, production: bool, log_format: str
) -> None:
    seeded = SQLiteStore(tmp_path / "hub.sqlite3")
    for user in ("alice", "bob"):
        seeded.add_user(user, email=f"{user}@example.test")
    seeded.add_project("demo", owner="alice")
    now = int(time.time())

    def token(user: str, **changes: Any) -> str:
        values = claims(user, now, iss=None, aud=None, **changes)
        return hs(HS256, values, LOG_SECRET)

    tokens = {
        "alice auth": token("alice"),
        "alice query": token("alice", exp=now + 1800),
        "bob header": token("bob"),
        "fresh": token("alice", exp=now + 7200),
        "forged": hs(HS256, claims("alice", now, iss=None, aud=None), "a-forger-secret-0123456789"),
        "expired": token("alice", exp=now - 30),
        "alg none": unsigned({"alg": "none"}, claims("alice", now, iss=None, aud=None)),
    }
    wrong_emit = [one_byte_off(LOG_EMIT_TOKEN, -1), LOG_EMIT_TOKEN[:-1]]
    wrong_password = "wrong-" + ADMIN_PASSWORD
    command = [sys.executable, "-m", "hub.cli", "serve", "--port", "0"]
    if production:
        command += ["--internal-port", "0"]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=serve_environ(tmp_path, production, log_format),
        cwd=str(CHECKOUT),
    )
    hub = HubProcess(process)
    nursery.start_soon(hub.read)
    try:
        started = await hub.wait_for("internal API on")
        public, internal = (
            f"http://127.0.0.1:{port}" for port in re.findall(r"http://127\.0\.0\.1:(\d+)", started)
        )
        bearer = {"Authorization": f"Bearer {LOG_EMIT_TOKEN}"}
        async with crowd(nursery, public) as people:
            users: dict[str, Record] = {
                "alice auth": {"auth": {"token": tokens["alice auth"]}},
                "bob header": {
                    "extraHeaders": {"Authorization": f"Bearer {tokens['bob header']}"},
                    "transports": ["polling"],
                },
                "alice query": {
                    "query": {"token": tokens["alice query"]},
                    "transports": ["websocket"],
                },
            }
            await open_all(people, users)
            assert {o["ev"] for o in (await outcomes(people, users)).values()} == {"connect"}
            refreshed, refused_refresh, joined = [
                line["args"][0]
                for line in await people.calls(
                    [
                        ("alice auth", "refresh-token", [{"token": tokens["fresh"]}]),
                        ("alice auth", "refresh-token", [{"token": tokens["forged"]}]),
                        ("alice auth", "join-project", [{"projectId": "demo"}]),
                    ]
                )
            ]
            intruders: dict[str, Record] = {
                "forged in auth": {"auth": {"token": tokens["forged"]}},
                "forged in a header": {
                    "extraHeaders": {"Authorization": f"Bearer {tokens['forged']}"},
                    "transports": ["polling"],
                },
                "forged in the query": {
                    "query": {"token": tokens["forged"]},
                    "transports": ["websocket"],
                },
                "expired in the query": {
                    "query": {"token": tokens["expired"]},
                    "transports": ["polling"],
                },
                "alg none in auth": {"auth": {"token": tokens["alg none"]}},
            }
            await open_all(people, intruders)
            await people.open(
                "admin", {"auth": {"username": ADMIN_USER, "password": ADMIN_PASSWORD}}, "/admin"
            )
            await people.open(
                "admin, wrong password",
                {"auth": {"username": ADMIN_USER, "password": wrong_password}},
                "/admin",
            )
            kept_out = await outcomes(people, [*intruders, "admin, wrong password"])
            assert (await outcomes(people, ["admin"]))["admin"]["ev"] == "connect"

            async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
                api = internal + "/internal/"
                note = {"event": "note", "data": {"n": 1}, "to": ["user:alice"]}
                emitted = await http.post(api + "emit", json=note, headers=bearer)
                await http.post(
                    api + "broadcast", json={"event": "note", "data": {}}, headers=bearer
                )
                await http.post(
                    api + "rooms/join",
                    json={"userId": "bob", "rooms": ["batch:b9"]},
                    headers=bearer,
                )
                await http.get(api + "users/alice/sockets", headers=bearer)
                await http.get(internal + "/metrics", headers=bearer)
                for wrong in wrong_emit:
                    await http.post(
                        api + "emit", json=note, headers={"Authorization": f"Bearer {wrong}"}
                    )
                await http.post(api + f"emit?token={LOG_EMIT_TOKEN}", json=note)
                await http.post(
                    api + "emit", json=note, headers={"Authorization": f"Basic {LOG_EMIT_TOKEN}"}
                )
                await http.post(api + f"emit/{tokens['alice auth']}", json=note, headers=bearer)
                await http.get(api + LOG_EMIT_TOKEN, headers=bearer)
                await http.post(api + "emit", json={**note, "except": 5}, headers=bearer)
            await people.expect("event", "alice auth", name="note")
        with trio.fail_after(STEP_TIMEOUT):  # every tab's last line written
            while sum("socket disconnected" in line for line in hub.lines) < len(users):
                await trio.sleep(0.05)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            process.send_signal(signal.SIGINT)
            await process.wait()
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, hub.lines

    assert refreshed["ok"] is True
    assert joined == {"ok": True}
    assert refused_refresh["error"]["code"] == INVALID
    assert emitted.json() == {"delivered": 2}  # both of alice's tabs
    assert {case: o["ev"] for case, o in kept_out.items()} == dict.fromkeys(
        kept_out, "connect_error"
    )
    lines = [line for line in hub.lines if line.strip()]
    secrets = [*tokens.values(), LOG_SECRET, LOG_EMIT_TOKEN, *wrong_emit]
    secrets += [ADMIN_PASSWORD, wrong_password, ADMIN_HASH]
    for line in lines:
        assert_safe(line, *secrets)
        if log_format == "json":
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(entry), line
    if log_format == "text":
        assert not lines[0].startswith("{"), lines[0]
    text = "\n".join(lines)
    # The session left its traces, without what it carried.
    assert text.count("connect refused: TOKEN_INVALID") >= 4, text
    assert "connect refused: TOKEN_EXPIRED" in text
    assert text.count("socket connected") >= 3
    assert "invalid credentials" in text
    assert "logged in" in text


def fragments(secret: str, size: int = 8) -> set[str]:
    """Every piece of ``secret`` of ``size`` characters: what a log cut short could show."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


async def test_a_long_path_holding_a_token_is_hidden_before_the_log_line_is_cut(
    nursery: trio.Nursery, store: SQLiteStore, restore_logging: None
) -> None:
    running = await launch(nursery, store, emit_token=LOG_EMIT_TOKEN)
    out = io.StringIO()
    configure_for(running.hub.config, out)
    now = int(time.time())
    jwt = hs_token("alice", now, pad="p" * 40)  # longer than a log line keeps of a path
    # The emit token where a line cut to 200 characters would split it.
    split = "/internal/" + "p" * 130 + LOG_EMIT_TOKEN + "q" * 30
    bearer = {"Authorization": f"Bearer {LOG_EMIT_TOKEN}"}
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT, headers=bearer) as http:
        answers = [
            await http.post(running.url + f"/internal/emit/{jwt}", json={}),
            await http.get(running.url + split),
            await http.post(running.url + f"/internal/{jwt}/{'x' * 300}", json={}),
        ]
    assert [answer.status_code for answer in answers] == [404, 404, 404]
    log = out.getvalue()
    assert log.count("no such endpoint") == 3, log
    for piece in fragments(LOG_EMIT_TOKEN) | set(token_parts(jwt)):
        assert piece not in log, (piece, log)
