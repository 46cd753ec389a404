"""Static files for the hub's pages: its own (``hub/app/static/``) and those of npm packages.

The status page runs the official client bundle (``socket.io-client/dist/socket.io.min.js``)
and the Admin UI is the bundle of ``@socket.io/admin-ui`` (``ui/dist``); both come from a
``node_modules`` folder, found by :func:`find_node_modules`: ``$HUB_NODE_MODULES``, else
``./node_modules``, else the one beside the ``hub`` package (a checkout where ``make install``
ran). Nothing is downloaded at run time.

:class:`StaticFiles` serves a folder under a path prefix: GET only, no directory listing, no
way out of the folder (``..``, a symlink pointing outside, a NUL byte: 404). Small files are
read once and kept in memory (the set of files is fixed: a package's ``dist``).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path

import trio

from hub.transport.http import Request, Response, WebSocket

__all__ = ["HUB_STATIC", "StaticFiles", "find_node_modules", "not_found"]

HUB_STATIC = Path(__file__).resolve().parent / "static"
"""The hub's own page files."""

CACHED_SIZE = 2 * 1024 * 1024
"""Files up to this size are kept in memory after their first read (larger: source maps)."""

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
    ".json": "application/json",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
}

SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"),)


def content_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def find_node_modules(environ: Mapping[str, str], *, needs: str) -> Path | None:
    """The first ``node_modules`` folder that holds ``needs`` (a path inside it), or None.

    Looked for in ``$HUB_NODE_MODULES``, then ``./node_modules``, then beside the ``hub``
    package.
    """
    candidates: list[Path] = []
    configured = environ.get("HUB_NODE_MODULES")
    if configured:
        candidates.append(Path(configured))
    candidates.append(Path.cwd() / "node_modules")
    candidates.append(Path(__file__).resolve().parents[2] / "node_modules")
    for folder in candidates:
        if (folder / needs).exists():
            return folder
    return None


def not_found() -> Response:
    return Response.text(404, "not found", SECURITY_HEADERS)


class StaticFiles:
    """An :class:`~hub.transport.http.App` serving the files of ``folder`` under ``prefix``.

    Args:
        prefix: the path prefix, ending in ``/`` (``"/admin-ui/"``).
        folder: the folder served.
        overrides: relative path -> response, served instead of the file (e.g. an
            ``index.html`` rewritten for this server); ``""`` is the prefix itself.
    """

    def __init__(
        self, prefix: str, folder: Path, *, overrides: Mapping[str, Response] | None = None
    ) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix ends with '/': {prefix!r}")
        self.prefix = prefix
        self.folder = folder.resolve()
        self.overrides = dict(overrides or {})
        self._cache: dict[str, Response] = {}

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(not_found())

    async def handle_http(self, request: Request) -> Response:
        if request.path == self.prefix[:-1]:
            # Relative links in the page (css/app.css) need the trailing slash.
            return Response(301, (("Location", self.prefix), *SECURITY_HEADERS))
        if not request.path.startswith(self.prefix):
            return not_found()
        if request.method != "GET":
            return Response.text(405, "method not allowed", (("Allow", "GET"),))
        relative = request.path[len(self.prefix) :]
        override = self.overrides.get(relative)
        if override is not None:
            return override
        return await self.file(relative)

    async def file(self, relative: str) -> Response:
        """The response for the file at ``relative`` (a 404 when it is not there)."""
        cached = self._cache.get(relative)
        if cached is not None:
            return cached
        path = self._resolve(relative)
        if path is None:
            return not_found()
        try:
            body = await trio.to_thread.run_sync(path.read_bytes)
        except OSError:
            return not_found()
        response = Response(
            200,
            (
                ("Content-Type", content_type(path)),
                ("Cache-Control", "no-cache"),
                *SECURITY_HEADERS,
            ),
            body,
        )
        if len(body) <= CACHED_SIZE:
            self._cache[relative] = response
        return response

    def _resolve(self, relative: str) -> Path | None:
        if not relative or "\0" in relative or "\\" in relative:
            return None
        parts = relative.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        path = (self.folder / os.path.join(*parts)).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            return None
        return path
