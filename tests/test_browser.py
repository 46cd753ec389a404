"""The status page and the Admin UI in a real browser: headless Chromium driven by Playwright.

A hub runs in a subprocess as ``hub serve --demo`` runs it (development, SQLite, the demo users,
the Admin UI and the status page of :func:`hub.app.status.install_tools`) on a free loopback
port. Chromium is Debian's (``apt-get install chromium``), driven by Playwright for Python with
``executable_path``: no browser is downloaded. Requests to any other host are aborted, so the
pages are proved to work from the hub alone.

Each test writes a screenshot to ``tests/artifacts/``; with ``HUB_DOCS_SCREENSHOTS=1`` also to
``docs/``, the README's pictures::

    HUB_DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/test_browser.py
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CHECKOUT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = CHECKOUT / "docs"
CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")
STARTUP = 60.0
"""Seconds for the hub subprocess to listen (a loaded 2-core machine)."""
STEP = 15_000
"""Milliseconds for anything the browser waits for."""

# What `hub serve --demo` runs: the hub with its tools, the demo users; then one JSON line
# saying where it listens and the demo's tokens.
LAUNCHER = """
import json, logging, os, sys
import trio
from hub.app.auth import mint_token
from hub.app.config import Config
from hub.app.demo import seed_demo
from hub.app.hub import Hub
from hub.app.status import install_tools
from hub.app.store import SQLiteStore

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
config = Config.from_env(os.environ, port=0, database=sys.argv[1]).check()
store = SQLiteStore(config.database)
hub = Hub(config, store)
install_tools(hub, os.environ, demo=True)

async def main():
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(hub.serve)
        seed_demo(store, config, addresses.internal_url)
        tokens = {user: mint_token(user, hub.auth) for user in ("alice", "bob", "carol")}
        print(json.dumps({"url": addresses.url, "internal_url": addresses.internal_url,
                          "emit_token": config.emit_token, "tokens": tokens}), flush=True)

trio.run(main)
"""


def _missing(reason: str) -> None:
    pytest.skip(reason)  # a failure under HUB_REQUIRE_ALL=1 (tests/conftest.py)


@attrs.frozen
class RunningHub:
    url: str
    internal_url: str
    emit_token: str
    tokens: dict[str, str]

    def emit(self, body: dict[str, Any]) -> int:
        answer = httpx.post(
            self.internal_url + "/internal/emit",
            json=body,
            headers={"Authorization": f"Bearer {self.emit_token}"},
            timeout=10,
        )
        answer.raise_for_status()
        delivered: int = answer.json()["delivered"]
        return delivered


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    for package in ("@socket.io/admin-ui/ui/dist/index.html", "socket.io-client/dist"):
        if not (CHECKOUT / "node_modules" / package).exists():
            _missing(f"the npm package of {package} is not installed (run `make install`)")
    folder = tmp_path_factory.mktemp("hub")
    log = (folder / "hub.log").open("wb")
    env = {**os.environ, "HUB_ENV": "development"}
    for name in ("HUB_ADMIN_USERNAME", "HUB_ADMIN_PASSWORD_HASH", "HUB_ADMIN_READONLY"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(folder / "hub.sqlite3")],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=CHECKOUT,
        env=env,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        try:
            info = json.loads(lines.get(timeout=STARTUP))
        except (queue.Empty, ValueError):
            pytest.fail(f"the hub did not start:\n{(folder / 'hub.log').read_text()[-3000:]}")
        yield RunningHub(**info)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser, hub: RunningHub) -> Iterator[BrowserContext]:
    """A fresh browser profile that reaches the hub and nothing else."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})

    def only_the_hub(route: Route) -> None:
        if route.request.url.startswith(hub.url + "/"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_the_hub)
    context.set_default_timeout(STEP)
    try:
        yield context
    finally:
        context.close()


def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("HUB_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        (DOCS / name).write_bytes(path.read_bytes())
    return path


def open_user(context: BrowserContext, hub: RunningHub, user: str) -> tuple[Page, str]:
    """A tab of ``user``: the stock client bundle the hub serves, connected with the user's
    token and in project ``demo``; what it receives is kept in ``window.received``."""
    page = context.new_page()
    page.goto(hub.url + "/static/")  # any page of the hub's origin
    page.add_script_tag(url=hub.url + "/static/socket.io.min.js")
    socket_id: str = page.evaluate(
        """(token) => new Promise((resolve, reject) => {
            window.received = [];
            window.disconnects = [];
            const socket = io("/", { auth: { token } });
            socket.onAny((...event) => window.received.push(event));
            socket.on("disconnect", (reason) => window.disconnects.push(reason));
            socket.on("connect_error", (err) => reject(new Error(err.message)));
            socket.once("connect", async () => {
                const answer = await socket.emitWithAck("join-project", { projectId: "demo" });
                if (!answer.ok) reject(new Error(JSON.stringify(answer)));
                resolve(socket.id);
            });
        })""",
        hub.tokens[user],
    )
    return page, socket_id


def test_status_page_upgrades_and_shows_an_emitted_event(
    context: BrowserContext, hub: RunningHub
) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(hub.url + "/")
    # Its own connection: the stock client opens over long-polling, then upgrades.
    expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket")
    expect(page.locator("#transport-history")).to_have_text("polling → websocket")
    expect(page.locator("#connection")).to_have_text("live")

    # A refused connection appears with its code.
    tab, socket_id = open_user(context, hub, "alice")
    refusal = tab.evaluate(
        """() => new Promise((resolve) => {
            const socket = io("/", { auth: { token: "not-a-token" }, forceNew: true });
            socket.on("connect_error", (err) => resolve(err.data.code));
        })"""
    )
    assert refusal == "TOKEN_INVALID"
    expect(page.locator("#refusals tbody tr").first).to_contain_text("TOKEN_INVALID")
    expect(page.locator("#users")).to_have_text("1")
    expect(page.locator("#rooms")).to_contain_text("project:demo")

    # An event pushed through the emit endpoint: in the page's recent events, and in alice's tab.
    update = {"imageId": "img-7", "projectId": "demo", "status": "segmented", "progress": 100}
    assert hub.emit({"event": "segmentation-update", "to": ["user:alice"], "data": update}) == 1
    row = page.locator("#events tbody tr").first
    expect(row).to_contain_text("segmentation-update")
    expect(row).to_contain_text("user:alice")
    expect(row.locator("td").nth(3)).to_have_text("1")
    expect(row).to_contain_text('"imageId":"img-7"')
    tab.wait_for_function(
        "window.received.some(([name, data]) => name === 'segmentation-update'"
        " && data.imageId === 'img-7')"
    )

    # A few seconds of traffic for the chart, then the picture.
    for n in range(8):
        stats = {"projectId": "demo", "queued": 8 - n, "processing": 1, "completed": n,
                 "failed": 0, "total": 9}  # fmt: skip
        assert hub.emit({"event": "queue-stats-update", "to": ["project:demo"], "data": stats})
        time.sleep(0.35)
    expect(page.locator("#events tbody tr")).to_have_count(9)
    page.wait_for_timeout(1200)
    assert socket_id
    screenshot(page, "status-page.png", full_page=True)


def test_admin_ui_logs_in_and_lists_the_sockets(context: BrowserContext, hub: RunningHub) -> None:
    from playwright.sync_api import expect

    tab, socket_id = open_user(context, hub, "bob")
    admin = context.new_page()
    admin.goto(hub.url + "/admin-ui/")
    # The form opens filled in with this hub; only the credentials are asked for.
    expect(admin.get_by_label("Server URL")).to_have_value(hub.url)
    admin.get_by_label("Username").fill("admin")
    admin.get_by_label("Password").fill("wrong")
    admin.get_by_role("button", name="Connect").click()
    expect(admin.get_by_text("Invalid credentials")).to_be_visible()
    admin.get_by_label("Password").fill("admin")
    admin.get_by_role("button", name="Connect").click()
    expect(admin.get_by_text("connected", exact=True).first).to_be_visible()

    # The dashboard: this server, healthy, and the namespaces with their sockets.
    namespaces = admin.locator(".v-card", has_text="Namespaces")
    expect(namespaces).to_contain_text("/admin")
    expect(admin.locator(".v-card", has_text="Servers")).to_contain_text("1")
    admin.wait_for_timeout(2500)  # a second server_stats: the charts have two points
    screenshot(admin, "admin-ui-dashboard.png")

    # The sockets of "/": bob's tab, over WebSocket.
    admin.get_by_role("navigation").get_by_role("link", name="Sockets").click()
    row = admin.locator("tr", has_text=socket_id)
    expect(row).to_be_visible()
    expect(row).to_contain_text("WebSocket")
    expect(row).to_contain_text("127.0.0.1")
    screenshot(admin, "admin-ui-sockets.png")

    # Its disconnect button reaches the hub: bob's tab is disconnected for good.
    row.get_by_role("button").click()
    tab.wait_for_function("window.disconnects.includes('io server disconnect')")
    # (The click also opens the socket's details, which say so.)
    expect(admin.get_by_text("disconnected", exact=True).first).to_be_visible()
    admin.get_by_role("navigation").get_by_role("link", name="Sockets").click()
    expect(admin.locator("tr", has_text=socket_id)).to_have_count(0)
