"""The ``hub`` command.

``hub serve`` starts the hub (development on SQLite unless configured otherwise; ``--demo`` seeds
users and a shared project and prints their tokens); ``hub token`` mints a development token;
``hub schema`` exports the event catalogue; ``hub users|projects|batches`` manage the SQLite
access store; ``hub nginx-config`` writes an nginx configuration for several nodes; ``hub
conformance`` serves the app of the official protocol test suites.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from hub.app.config import Config, ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from hub.app.store_cli import add_store_commands

    parser = argparse.ArgumentParser(prog="hub", description="A Socket.IO hub on Trio.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub")
    serve.add_argument("--host", help="listen address (HUB_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (HUB_PORT, default 3000)")
    serve.add_argument("--internal-host", help="address of the internal API (HUB_INTERNAL_HOST)")
    serve.add_argument(
        "--internal-port",
        type=int,
        help="serve /internal/ only on this port (HUB_INTERNAL_PORT; default: on the public port)",
    )
    serve.add_argument("--database", help="SQLite access store (HUB_DATABASE, default hub.sqlite3)")
    serve.add_argument("--env", choices=["development", "production"], help="HUB_ENV / NODE_ENV")
    serve.add_argument("--access-hook-url", help="ask this backend for access decisions")
    serve.add_argument("--ping-interval", type=float, help="seconds (HUB_PING_INTERVAL)")
    serve.add_argument("--ping-timeout", type=float, help="seconds (HUB_PING_TIMEOUT)")
    serve.add_argument("--max-payload", type=int, help="bytes (HUB_MAX_PAYLOAD)")
    serve.add_argument(
        "--node-id",
        help="this node's id behind nginx, the prefix of its session ids (HUB_NODE_ID)",
    )
    serve.add_argument(
        "--trusted-proxies",
        help="comma-separated proxy addresses or networks whose X-Forwarded-For is believed"
        " (HUB_TRUSTED_PROXIES)",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="share rooms with the other nodes through this Redis, e.g. redis://127.0.0.1:6379"
        " (HUB_REDIS_URL)",
    )
    serve.add_argument(
        "--metrics-public",
        action="store_true",
        default=None,
        help="serve /health, /ready and /metrics on the public port too, without a token"
        " (HUB_METRICS_PUBLIC)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines for people or JSON lines (HUB_LOG_FORMAT; default: json in production)",
    )
    serve.add_argument("--demo", action="store_true", help="seed demo users and print tokens")

    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("user_id")
    token.add_argument("--email")
    token.add_argument("--expires-in", type=float, default=3600.0, help="seconds")

    schema = commands.add_parser("schema", help="export the event catalogue")
    schema.add_argument("--format", choices=["json", "typescript"], default="json")
    schema.add_argument("--output", "-o", help="write to this file instead of stdout")

    nginx = commands.add_parser(
        "nginx-config", help="write an nginx configuration for several hub nodes"
    )
    nginx.add_argument(
        "--nodes",
        required=True,
        help="host:port,host:port... (ids n1, n2... in order) or id=host:port,...",
    )
    nginx.add_argument("--listen", default="8080", help="nginx's listen: port or host:port")
    nginx.add_argument(
        "--balance",
        choices=["least_conn", "ip_hash"],
        default="least_conn",
        help="how new sessions are spread (default least_conn)",
    )
    nginx.add_argument(
        "--http-only",
        action="store_true",
        help="only the http {} part, for /etc/nginx/conf.d/ (default: a whole nginx.conf)",
    )
    nginx.add_argument("--access-log", help="access log path")
    nginx.add_argument("--ping-interval", type=float, help="the nodes' (HUB_PING_INTERVAL)")
    nginx.add_argument("--ping-timeout", type=float, help="the nodes' (HUB_PING_TIMEOUT)")
    nginx.add_argument("--max-payload", type=int, help="the nodes' (HUB_MAX_PAYLOAD)")
    nginx.add_argument("--output", "-o", help="write to this file instead of stdout")

    conformance = commands.add_parser(
        "conformance", help="serve the app of the official protocol test suites"
    )
    conformance.add_argument("--host", default="localhost")
    conformance.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))

    add_store_commands(commands)
    return parser


def _config(args: argparse.Namespace, *, check: bool = True) -> Config:
    config = Config.from_env(
        os.environ,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        internal_host=getattr(args, "internal_host", None),
        internal_port=getattr(args, "internal_port", None),
        database=getattr(args, "database", None),
        access_hook_url=getattr(args, "access_hook_url", None),
        ping_interval=getattr(args, "ping_interval", None),
        ping_timeout=getattr(args, "ping_timeout", None),
        max_payload=getattr(args, "max_payload", None),
        node_id=getattr(args, "node_id", None),
        trusted_proxies=_list_arg(getattr(args, "trusted_proxies", None)),
        redis_url=getattr(args, "redis", None),
        metrics_public=getattr(args, "metrics_public", None),
        log_format=getattr(args, "log_format", None),
        freeze_gc=args.command == "serve",
        **({"env": args.env} if getattr(args, "env", None) else {}),
    )
    return config.check() if check else config


def _list_arg(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _serve(args: argparse.Namespace) -> int:
    from hub.app.demo import seed_demo
    from hub.app.hub import Hub
    from hub.app.logs import configure_for as configure_logging
    from hub.app.store import SQLiteStore, open_store

    config = _config(args)
    configure_logging(config)  # now with the flags, and every secret to keep out of the log
    store = open_store(config.database, config.access_hook_url, config.access_hook_token)
    if args.demo and not isinstance(store, SQLiteStore):
        print("hub: --demo seeds the SQLite store; unset the access hook", file=sys.stderr)
        return 2
    hub = Hub(config, store)
    from hub.app.status import install_tools

    install_tools(hub, os.environ, demo=args.demo)  # the Admin UI and the status page

    async def run() -> None:
        # SIGTERM: a graceful shutdown. SIGINT (Ctrl-C): stop now. Both handled here, not left
        # to Python, which never raises KeyboardInterrupt in a process that started with SIGINT
        # ignored (one started in the background by a shell); and from before the hub listens,
        # so that a signal sent as soon as it does is not lost.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                addresses = await nursery.start(hub.serve)
                if args.demo:
                    assert isinstance(store, SQLiteStore)
                    print(seed_demo(store, config, addresses.internal_url), flush=True)
                async for number in signals:
                    if number == signal.SIGTERM:
                        await hub.shutdown()
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)
    return 0


def _token(args: argparse.Namespace) -> int:
    from hub.app.auth import mint_token

    config = _config(args)
    if config.production:
        print("hub: 'hub token' mints development tokens only", file=sys.stderr)
        return 2
    if not all(a.upper().startswith("HS") for a in config.jwt_algorithms):
        print("hub: 'hub token' mints HMAC (HS*) tokens only", file=sys.stderr)
        return 2
    settings = config.auth_settings()
    print(mint_token(args.user_id, settings, email=args.email, expires_in=args.expires_in))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from hub.app.events import json_schema, typescript

    text = json.dumps(json_schema(), indent=2) + "\n" if args.format == "json" else typescript()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as output:
            output.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _nginx_config(args: argparse.Namespace) -> int:
    from hub.app.nginx import parse_listen, parse_nodes, render

    text = render(
        parse_nodes(args.nodes),
        _config(args, check=False),  # the nodes' heartbeat and limits; no secret is needed
        listen=parse_listen(args.listen),
        balancing=args.balance,
        http_only=args.http_only,
        access_log=args.access_log,
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as output:
            output.write(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:

    args = _parser().parse_args(argv)
    status = 1
    try:
        status = _run(args)
    except* KeyboardInterrupt:  # Ctrl-C: trio hands it over inside an exception group
        status = 0
    except* OSError as group:  # e.g. the port is taken: one line, no traceback
        print(f"hub: {_first(group)}", file=sys.stderr)
        status = 1
    return status


def _first(group: BaseExceptionGroup[OSError]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _run(args: argparse.Namespace) -> int:
    from hub.app.logs import configure_from_environ
    from hub.app.store_cli import run_store_command

    configure_from_environ(os.environ)
    # The Redis client logs each lost connection and each failed attempt (with a traceback);
    # hub.cluster says it once per outage, and once when Redis is back.
    logging.getLogger("coredis").setLevel(logging.CRITICAL)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "token":
            return _token(args)
        if args.command == "schema":
            return _schema(args)
        if args.command == "nginx-config":
            return _nginx_config(args)
        if args.command == "conformance":
            from hub.conformance import serve_conformance

            print(f"conformance app on http://{args.host}:{args.port}", flush=True)
            trio.run(serve_conformance, args.host, args.port)
            return 0
        return run_store_command(args)
    except ConfigError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
