"""Who takes part in a soak run: users, projects, their tabs, and the access store behind them.

The store is seeded with the commands a person runs (``hub users add``, ``hub projects add``,
``hub projects share``), parsed and run by the ``hub`` command's own store commands
(:mod:`hub.app.store_cli`) in this process: the same parser and code, without a Python start-up
per user.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import random
from pathlib import Path

import attrs

from hub.app.store_cli import add_store_commands, run_store_command

__all__ = ["TRANSPORTS", "Population", "Tab", "populate", "seed_store"]

TABS_PER_USER = (1, 2, 3, 4)
"""How many tabs a user opens at first (drawn evenly: 2.5 on average)."""
MEMBERS_PER_PROJECT = 10
"""The owner and the users a project is shared with."""
JOIN_SHARE = 0.6
"""The share of tabs that open a project page (join its room); the others sit in their user
room only."""
TRANSPORTS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("websocket",), 0.7),
    (("polling", "websocket"), 0.2),  # the stock client's default: polling, then the upgrade
    (("polling",), 0.1),
)
"""The transports tabs are given, with their shares."""


@attrs.frozen
class Tab:
    """One browser tab: a socket.io-client instance, always on the same node.

    Attributes:
        index: its number in the run (new tabs get new numbers).
        user: whose tab it is; its socket is in ``user:<user>``.
        node: the id of the node it connects to, directly (its own URL), so that a
            reconnection comes back to the node that keeps its session.
        project: the project whose page it shows (it joins ``project:<id>``), or None.
        transports: socket.io-client's ``transports`` option.
    """

    index: int
    user: str
    node: str
    project: str | None
    transports: tuple[str, ...]


@attrs.define
class Population:
    """The users and projects of a run, and the tabs opened so far."""

    users: list[str]
    projects: dict[str, list[str]]  # project -> its members (the owner first)
    access: dict[str, list[str]]  # user -> the projects they may open
    nodes: tuple[str, ...]
    rng: random.Random
    tabs: list[Tab] = attrs.field(factory=list)

    def new_tab(self, user: str | None = None) -> Tab:
        """A tab for ``user`` (a random one when None) on a random node, numbered next."""
        rng = self.rng
        user = user if user is not None else rng.choice(self.users)
        projects = self.access[user]
        project = rng.choice(projects) if projects and rng.random() < JOIN_SHARE else None
        transports = rng.choices(
            [kind for kind, _ in TRANSPORTS], weights=[share for _, share in TRANSPORTS]
        )[0]
        tab = Tab(len(self.tabs), user, rng.choice(self.nodes), project, transports)
        self.tabs.append(tab)
        return tab

    def first_tabs(self, count: int) -> list[Tab]:
        """The tabs open at the start: each user in turn opens 1 to 4, until ``count``."""
        tabs: list[Tab] = []
        users = itertools.cycle(self.users)
        while len(tabs) < count:
            user = next(users)
            for _ in range(min(self.rng.choice(TABS_PER_USER), count - len(tabs))):
                tabs.append(self.new_tab(user))
        return tabs


def populate(clients: int, nodes: tuple[str, ...], seed: int) -> Population:
    """Users enough for ``clients`` tabs (2.5 each, with a tenth to spare for the tabs opened
    later), one project per ten users, each shared with nine others.

    Args:
        clients: how many tabs are open at once.
        nodes: the nodes' ids.
        seed: the seed of every random choice of the run.
    """
    rng = random.Random(seed)
    count = max(4, round(clients / 2.5 * 1.1))
    users = [f"u{i:05d}" for i in range(count)]
    projects: dict[str, list[str]] = {}
    access: dict[str, list[str]] = {user: [] for user in users}
    for k in range(max(2, count // MEMBERS_PER_PROJECT)):
        project = f"p{k:04d}"
        owner = users[(k * MEMBERS_PER_PROJECT) % count]
        others = rng.sample(
            [user for user in users if user != owner], min(MEMBERS_PER_PROJECT, count) - 1
        )
        projects[project] = [owner, *others]
        for member in projects[project]:
            access[member].append(project)
    return Population(users, projects, access, nodes, rng)


def seed_store(population: Population, database: Path) -> None:
    """Write the population into the SQLite store ``database`` with the ``hub`` commands.

    Raises:
        RuntimeError: a command was refused (it says why).
    """
    commands = [["users", "add", user, "--email", f"{user}@soak.test"] for user in population.users]
    for project, (owner, *others) in population.projects.items():
        commands.append(["projects", "add", project, "--owner", owner])
        commands += [["projects", "share", project, "--user", user] for user in others]
    parser = argparse.ArgumentParser(prog="hub")
    add_store_commands(parser.add_subparsers(dest="command", required=True))
    for command in commands:
        args = parser.parse_args([*command, "--database", str(database)])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = run_store_command(args)
        if status != 0:
            raise RuntimeError(f"hub {' '.join(command)}: {err.getvalue().strip()}")
