"""``hub serve --demo``: a few users and a shared project, with their tokens and a ready curl."""

from __future__ import annotations

import contextlib
import functools
import shlex
from collections.abc import Callable

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import Config
from hub.app.store import SQLiteStore, StoreError

__all__ = ["DEMO_USERS", "seed_demo"]

DEMO_USERS = (
    ("alice", "alice@example.com"),
    ("bob", "bob@example.com"),
    ("carol", "carol@example.com"),
)


def seed_demo(
    store: SQLiteStore, config: Config, internal_url: str, *, expires_in: float = 24 * 3600
) -> str:
    """Seed alice (owns project ``demo``), bob (``demo`` shared with him) and carol (no access),
    and a batch ``demo-batch`` of ``demo``; idempotent.

    Returns:
        What to print: each user's token, and a curl that pushes an event to project ``demo``.
    """
    seeds: list[Callable[[], object]] = [
        *(functools.partial(store.add_user, user_id, email=email) for user_id, email in DEMO_USERS),
        functools.partial(store.add_project, "demo", owner="alice"),
        functools.partial(store.share_project, "demo", user="bob"),
        functools.partial(store.add_batch, "demo-batch", project="demo"),
    ]
    for seed in seeds:
        with contextlib.suppress(StoreError):  # seeded by an earlier run
            seed()
    settings = AuthSettings(
        secret=config.jwt_secret,
        algorithms=config.jwt_algorithms,
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
    )
    lines = ["Demo users (project 'demo' is alice's, shared with bob; carol has no access):"]
    for user_id, email in DEMO_USERS:
        token = mint_token(user_id, settings, email=email, expires_in=expires_in)
        lines.append(f"  {user_id:<6} {token}")
    body = (
        '{"event": "notification", "to": ["project:demo"], "data": {"id": "n1", "type": "info",'
        ' "title": "Hello", "message": "from the demo", "createdAt": "2026-01-01T00:00:00Z"}}'
    )
    lines += [
        "",
        "Push an event to everyone on project 'demo':",
        f"  curl -s {internal_url}/internal/emit \\",
        f"    -H 'Authorization: Bearer {config.emit_token}' \\",
        "    -H 'Content-Type: application/json' \\",
        f"    -d {shlex.quote(body)}",
    ]
    return "\n".join(lines)
