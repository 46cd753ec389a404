"""Routing of requests by path prefix, for serving several endpoints on one port."""

from __future__ import annotations

from hub.transport.http import App, Request, Response, WebSocket

__all__ = ["Router"]


class Router:
    """An :class:`~hub.transport.http.App` that hands each request to the app of its path.

    Args:
        routes: ``(prefix, app)`` pairs; the longest matching prefix wins. A prefix ending in
            ``/`` also matches the path without that slash.
    """

    handles_body_too_large = True  # passed on to the app of the path, which decides

    def __init__(self, routes: list[tuple[str, App]]) -> None:
        self._routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)

    def _find(self, path: str) -> App | None:
        for prefix, app in self._routes:
            if path.startswith(prefix) or (prefix.endswith("/") and path == prefix[:-1]):
                return app
        return None

    async def handle_http(self, request: Request) -> Response:
        app = self._find(request.path)
        if app is None:
            return Response.text(404, "not found")
        if request.body_too_large and not getattr(app, "handles_body_too_large", False):
            return Response.text(413, "request body too large")
        return await app.handle_http(request)

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        app = self._find(request.path)
        if app is None:
            await websocket.reject(Response.text(404, "not found"))
            return
        await app.handle_websocket(request, websocket)
