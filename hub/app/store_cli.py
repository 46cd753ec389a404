"""The ``hub users``, ``hub projects`` and ``hub batches`` commands: administer the SQLite store.

Each command opens the database named by ``--database``, else by ``HUB_DATABASE``, else
``hub.sqlite3`` (creating it if missing), does one thing, and prints one line saying what it
did (the ``list`` commands print one line per row, tab-separated). A refused command (an unknown
user, a duplicate id, ...) prints ``hub: <why>`` on stderr and exits with status 2.

Wiring, in the ``hub`` command's parser::

    add_store_commands(commands)
    ...
    if args.command in STORE_COMMANDS:
        return run_store_command(args)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from hub.app.store import DEFAULT_DATABASE, SQLiteStore, StoreError

__all__ = ["STORE_COMMANDS", "add_store_commands", "run_store_command"]

STORE_COMMANDS = ("users", "projects", "batches")
"""The top-level commands that :func:`add_store_commands` adds."""

_Action = Callable[[SQLiteStore, argparse.Namespace], list[str]]


def add_store_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``users``, ``projects`` and ``batches`` commands to a parser's subcommands.

    Args:
        commands: what ``parser.add_subparsers()`` returned.
    """
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database",
        metavar="PATH",
        default=None,
        help=f"the SQLite file (default: $HUB_DATABASE, else {DEFAULT_DATABASE})",
    )

    def add(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        action: _Action,
        summary: str,
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(name, parents=[database], help=summary, description=summary)
        parser.set_defaults(store_action=action)
        return parser

    users = commands.add_parser("users", help="manage the users of the access store")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    parser = add(user_commands, "add", _add_user, "add a user")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--email", metavar="EMAIL")
    parser.add_argument("--disabled", action="store_true", help="add the user disabled")
    add(user_commands, "disable", _disable_user, "disable a user").add_argument("id", metavar="ID")
    add(user_commands, "enable", _enable_user, "enable a user").add_argument("id", metavar="ID")
    add(user_commands, "list", _list_users, "list the users")

    projects = commands.add_parser("projects", help="manage projects and their shares")
    project_commands = projects.add_subparsers(dest="projects_command", required=True)
    parser = add(project_commands, "add", _add_project, "add a project")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--owner", metavar="USER", required=True)
    parser = add(project_commands, "share", _share_project, "share a project with a user")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--user", metavar="USER", required=True)
    parser = add(project_commands, "unshare", _unshare_project, "withdraw a user's share")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--user", metavar="USER", required=True)
    add(project_commands, "list", _list_projects, "list the projects and their shares")

    batches = commands.add_parser("batches", help="manage batches")
    batch_commands = batches.add_subparsers(dest="batches_command", required=True)
    parser = add(batch_commands, "add", _add_batch, "add a batch to a project")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--project", metavar="PROJECT", required=True)
    add(batch_commands, "list", _list_batches, "list the batches")


def run_store_command(args: argparse.Namespace) -> int:
    """Run a command that :func:`add_store_commands` parsed.

    Returns:
        0 when done (what was done is printed on stdout), 2 when the store refused (the reason
        is printed on stderr as ``hub: <reason>``).
    """
    action: _Action = args.store_action
    path = args.database or os.environ.get("HUB_DATABASE") or DEFAULT_DATABASE
    try:
        store = SQLiteStore(path)
        try:
            lines = action(store, args)
        finally:
            store.close()
    except StoreError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def _add_user(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    user = store.add_user(args.id, email=args.email, enabled=not args.disabled)
    details = [user.email or "no email"] + ([] if user.enabled else ["disabled"])
    return [f"added user {user.id} ({', '.join(details)})"]


def _disable_user(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.set_user_enabled(args.id, False)
    return [f"disabled user {args.id}"]


def _enable_user(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.set_user_enabled(args.id, True)
    return [f"enabled user {args.id}"]


def _list_users(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    return [
        f"{user.id}\t{user.email or '-'}\t{'enabled' if user.enabled else 'disabled'}"
        for user in store.users()
    ]


def _add_project(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.add_project(args.id, owner=args.owner)
    return [f"added project {args.id} owned by {args.owner}"]


def _share_project(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.share_project(args.id, user=args.user)
    return [f"shared project {args.id} with {args.user}"]


def _unshare_project(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.unshare_project(args.id, user=args.user)
    return [f"unshared project {args.id} from {args.user}"]


def _list_projects(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    lines = []
    for project in store.projects():
        shares = ",".join(
            share.user if share.accepted else f"{share.user}(pending)" for share in project.shares
        )
        lines.append(f"{project.id}\towner={project.owner}\tshared={shares or '-'}")
    return lines


def _add_batch(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    store.add_batch(args.id, project=args.project)
    return [f"added batch {args.id} to project {args.project}"]


def _list_batches(store: SQLiteStore, args: argparse.Namespace) -> list[str]:
    return [f"{batch.id}\tproject={batch.project}" for batch in store.batches()]
