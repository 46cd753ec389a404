"""The hub itself: authenticated sockets in user, project and batch rooms, and the emitters.

Every socket proves who it is with a JWT at connect (:mod:`hub.app.auth`) and joins
``user:<id>``. It may then ask to join ``project:<id>`` (owner or accepted share) and
``batch:<id>`` (access to the batch's project); the access store decides
(:mod:`hub.app.store`). A token's expiry is a deadline: the socket is warned (``auth:expiring``)
before it, may send ``refresh-token``, and is closed at the Engine.IO level when it passes, so the
stock client reconnects and asks its ``auth`` callback for a fresh token.

Backend services reach sockets through :meth:`Hub.emit` and the helpers named as the platform
names them (``emit_segmentation_update`` ...), in process or through the internal HTTP API
(:mod:`hub.app.internal`). Known events are validated against the catalogue
(:mod:`hub.app.events`) before anything is sent.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

from hub.app.auth import AuthError, AuthErrorCode, extract_token, verify_token
from hub.app.config import Config
from hub.app.events import EVENTS, to_wire, validate_event
from hub.app.metrics import HubStats, health_needs_token, health_routes
from hub.app.store import AccessStore, StoreError
from hub.cluster import RedisCluster
from hub.cluster.sessions import RedisSessions
from hub.server import ConnectionRefused, RecoveryOptions, Server, ServerOptions, Socket
from hub.server.recovery import RECOVERABLE_REASONS, Saved
from hub.transport.engine import Alarm

__all__ = ["Hub", "HubAddresses", "RoomError"]

log = logging.getLogger("hub.app")


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def project_room(project_id: str) -> str:
    return f"project:{project_id}"


def batch_room(batch_id: str) -> str:
    return f"batch:{batch_id}"


class RoomError(Exception):
    """A join refused: ``code`` and ``message`` go back to the client in the ack."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _wire(payload: Any) -> Any:
    """A payload object of the catalogue as its wire dict; a dict as it is (validated later)."""
    return payload if isinstance(payload, dict) else to_wire(payload)


def _ok() -> dict[str, Any]:
    return {"ok": True}


def _refused(error: RoomError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": error.code, "message": error.message}}


def _id_field(payload: Any, name: str) -> str:
    value = payload.get(name) if isinstance(payload, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise RoomError("INVALID_PAYLOAD", f"expected {{{name}: string}}")
    return value


class Hub:
    """The real-time hub of the platform.

    Args:
        config: the checked configuration (:meth:`Config.check`).
        store: where access decisions come from.
    """

    def __init__(self, config: Config, store: AccessStore) -> None:
        self.config = config
        self.store = store
        self.auth = config.auth_settings()
        # With Redis, recovery works across the nodes: sessions and missed events are kept
        # there too (hub.cluster.sessions), so a tab coming back to another node is recovered.
        self.sessions = (
            RedisSessions(config.redis_url, group=lambda data: data.get("user_id"))
            if config.redis_url and config.recovery_seconds > 0
            else None
        )
        self.server = Server(
            ServerOptions(
                path=config.path,
                ping_interval=config.ping_interval,
                ping_timeout=config.ping_timeout,
                max_payload=config.max_payload,
                cors_origins=config.origin_allowed,
                cors_credentials=True,
                max_http_body=config.max_internal_body,
                freeze_gc=config.freeze_gc,
                max_buffered=config.max_buffered,
                node_id=config.node_id,
                trusted_proxies=config.trusted_proxies,
                max_connections=config.max_connections,
                connections_per_second=config.connections_per_ip,
                recovery=(
                    RecoveryOptions(
                        max_disconnection_duration=config.recovery_seconds,
                        # A recovered socket shows its token again, like a new one.
                        skip_middlewares=False,
                        # The client comes back with a fresh token from its auth callback.
                        reasons=RECOVERABLE_REASONS | {"token expired"},
                        shared=self.sessions,
                    )
                    if config.recovery_seconds > 0
                    else None
                ),
            ),
            # With several nodes, broadcasts reach every node's sockets, and
            # ``server.to(...).everywhere`` acts on (and counts) them all: hub.cluster.
            cluster=RedisCluster(config.redis_url) if config.redis_url else None,
        )
        self.shutting_down = False
        # user id -> that user's live sockets (several tabs)
        self.connections: dict[str, dict[str, Socket]] = {}
        # Refusals and internal emits (hub.app.metrics); True while serve() listens.
        self.stats = HubStats()
        self.accepting = False
        # socket id -> the alarms of its token's expiry (the warning, then the close): kept
        # with the session's other deadlines, no task per socket
        self._expiry: dict[str, list[Alarm]] = {}
        # user id -> how many times rooms were taken from that user; a join whose access check
        # straddles a revocation checks again (connected users only)
        self._revocations: dict[str, int] = {}
        server = self.server
        server.use(self._authenticate)
        server.on("connect", self._on_connect)
        server.on("disconnect", self._on_disconnect)
        server.on("join-project", self._join_project)
        server.on("leave-project", self._leave_project)
        server.on("join-batch", self._join_batch)
        server.on("leave-batch", self._leave_batch)
        server.on("refresh-token", self._refresh_token)

    # -- connecting ------------------------------------------------------------------------

    async def _authenticate(self, socket: Socket, auth: dict[str, Any]) -> None:
        handshake = socket.handshake
        try:
            token = extract_token(auth, handshake.headers, handshake.query)
            if token is None:
                raise AuthError(AuthErrorCode.TOKEN_MISSING, "no token")
            identity = verify_token(token, self.auth)
            try:
                user = await self.store.get_user(identity.user_id)
            except StoreError as exc:
                log.warning("access store unavailable at connect: %s", exc)
                self.stats.refused("UNAVAILABLE", handshake.address)
                raise ConnectionRefused(
                    "Access store unavailable", {"code": "UNAVAILABLE"}
                ) from None
            if user is None or not user.enabled:
                raise AuthError(AuthErrorCode.USER_NOT_FOUND, "unknown or disabled user")
        except AuthError as exc:
            self.stats.refused(str(exc.code), handshake.address)
            log.info(
                "connect refused: %s",
                exc.code,
                extra={
                    "code": str(exc.code),
                    "address": handshake.address,
                    "connection": socket.client.engine.sid,
                    "transport": socket.transport,
                },
            )
            raise ConnectionRefused(exc.message, exc.payload()) from None
        if socket.recovered and socket.data.get("user_id") != identity.user_id:
            socket.start_afresh()  # another user's session: this one gets a new socket
        socket.data["user_id"] = identity.user_id
        socket.data["email"] = identity.email or user.email
        socket.data["expires_at"] = identity.expires_at

    def _on_connect(self, socket: Socket, auth: dict[str, Any]) -> None:
        user_id: str = socket.data["user_id"]
        socket.join(user_room(user_id))  # a recovered socket also gets back its other rooms
        self.connections.setdefault(user_id, {})[socket.id] = socket
        self._watch_expiry(socket)
        log.info(
            "socket connected",
            extra={
                "sid": socket.id,
                "user": user_id,
                "transport": socket.transport,
                "connection": socket.client.engine.sid,
                "address": socket.handshake.address,
            },
        )

    def _on_disconnect(self, socket: Socket, reason: str) -> None:
        user_id = socket.data.get("user_id")
        log.info(
            "socket disconnected",
            extra={
                "sid": socket.id,
                "user": user_id,
                "transport": socket.transport,
                "connection": socket.client.engine.sid,
                "reason": reason,
            },
        )
        for alarm in self._expiry.pop(socket.id, ()):
            alarm.cancel()
        tabs = self.connections.get(user_id or "")
        if tabs is not None:
            tabs.pop(socket.id, None)
            if not tabs:
                del self.connections[user_id or ""]
                self._revocations.pop(user_id or "", None)

    # -- token lifetime --------------------------------------------------------------------

    def _watch_expiry(self, socket: Socket) -> None:
        for alarm in self._expiry.pop(socket.id, ()):
            alarm.cancel()
        expires_at = socket.data.get("expires_at")
        if expires_at is None:
            return
        # The token's wall-clock expiry, mapped onto trio's clock once, here.
        expires_at = float(expires_at)
        now = trio.current_time()
        deadline = now + (expires_at - time.time())
        engine = socket.client.engine
        alarms = []
        if deadline > now:
            warn_at = max(deadline - self.config.token_warning, now)
            alarms.append(
                engine.call_at(
                    warn_at, lambda: self._warn_expiry(socket, expires_at, warn_at, deadline)
                )
            )
        alarms.append(engine.call_at(deadline, lambda: self._expired(socket)))
        self._expiry[socket.id] = alarms

    def _warn_expiry(
        self, socket: Socket, expires_at: float, warn_at: float, deadline: float
    ) -> None:
        # An alarm may ring a few ms before its time (the timers' grid): it counts as on time.
        left = max(0.0, deadline - max(trio.current_time(), warn_at))
        socket.emit(
            "auth:expiring", {"expiresAt": int(expires_at * 1000), "expiresIn": int(left * 1000)}
        )

    def _expired(self, socket: Socket) -> None:
        self._expiry.pop(socket.id, None)
        log.info(
            "token of user %s expired: closing socket %s", socket.data.get("user_id"), socket.id
        )
        # An Engine.IO close: the stock client reconnects and runs its auth callback.
        socket.client.engine.close("token expired")

    async def _refresh_token(self, socket: Socket, payload: Any = None, *_: Any) -> dict[str, Any]:
        token = payload.get("token") if isinstance(payload, dict) else payload
        if not isinstance(token, str) or not token:
            return _refused(RoomError("TOKEN_MISSING", "expected {token: string}"))
        try:
            identity = verify_token(token, self.auth)
        except AuthError as exc:
            return _refused(RoomError(exc.code, exc.message))
        if identity.user_id != socket.data.get("user_id"):
            return _refused(RoomError("TOKEN_INVALID", "token is for another user"))
        socket.data["expires_at"] = identity.expires_at
        self._watch_expiry(socket)
        expires = None if identity.expires_at is None else int(identity.expires_at * 1000)
        return {"ok": True, "expiresAt": expires}

    # -- rooms -----------------------------------------------------------------------------

    async def _allowed(self, user_id: str, project_id: str) -> bool:
        """Whether the user may be in the project's room, as of now.

        The store is asked again when a revocation for the user arrived while it was being
        asked, so that a join can never undo a revocation that overtook it.
        """
        for _ in range(3):
            before = self._revocations.get(user_id, 0)
            try:
                allowed = await self.store.can_access_project(user_id, project_id)
            except StoreError as exc:
                log.warning("access store unavailable: %s", exc)
                raise RoomError("UNAVAILABLE", "access could not be checked; try again") from None
            if self._revocations.get(user_id, 0) == before:
                return allowed
        raise RoomError("UNAVAILABLE", "access is changing; try again")

    async def _join_project(self, socket: Socket, payload: Any = None, *_: Any) -> dict[str, Any]:
        try:
            project_id = _id_field(payload, "projectId")
            user_id = socket.data["user_id"]
            if not await self._allowed(user_id, project_id):
                raise RoomError("FORBIDDEN", f"no access to project {project_id}")
        except RoomError as exc:
            return _refused(exc)
        socket.join(project_room(project_id))
        return _ok()

    def _leave_project(self, socket: Socket, payload: Any = None, *_: Any) -> dict[str, Any]:
        try:
            project_id = _id_field(payload, "projectId")
        except RoomError as exc:
            return _refused(exc)
        socket.leave(project_room(project_id))
        return _ok()

    async def _join_batch(self, socket: Socket, payload: Any = None, *_: Any) -> dict[str, Any]:
        try:
            batch_id = _id_field(payload, "batchId")
            user_id = socket.data["user_id"]
            project_id = await self._project_of_batch(batch_id)
            if not await self._allowed(user_id, project_id):
                raise RoomError("FORBIDDEN", f"no access to batch {batch_id}")
        except RoomError as exc:
            return _refused(exc)
        socket.join(batch_room(batch_id))
        return _ok()

    async def _project_of_batch(self, batch_id: str) -> str:
        try:
            project_id = await self.store.project_of_batch(batch_id)
        except StoreError as exc:
            log.warning("access store unavailable: %s", exc)
            raise RoomError("UNAVAILABLE", "access could not be checked; try again") from None
        if project_id is None:
            raise RoomError("NOT_FOUND", f"no batch {batch_id}")
        return project_id

    def _leave_batch(self, socket: Socket, payload: Any = None, *_: Any) -> dict[str, Any]:
        try:
            batch_id = _id_field(payload, "batchId")
        except RoomError as exc:
            return _refused(exc)
        socket.leave(batch_room(batch_id))
        return _ok()

    # -- emitting --------------------------------------------------------------------------

    def emit(
        self,
        event: str,
        data: Any,
        *,
        to: Iterable[str],
        except_: Iterable[str] = (),
        validated: bool = False,
    ) -> int:
        """Send ``event`` to the sockets in any of the rooms ``to`` but not in ``except_``.

        A known event's ``data`` is validated (and normalised) first.

        Returns:
            How many sockets it reached.

        Raises:
            hub.app.events.EventValidationError: ``data`` is not a valid payload of ``event``.
            ValueError: ``to`` is empty (a broadcast to everyone must be asked for with
                :meth:`broadcast`).

        ``validated=True`` says ``data`` has been through ``validate_event`` already.
        """
        rooms = [to] if isinstance(to, str) else list(to)
        if not rooms:
            raise ValueError("emit needs at least one room in 'to'")
        if event in EVENTS and not validated:
            data = validate_event(event, data)
        skip = [except_] if isinstance(except_, str) else list(except_)
        return self.server.to(rooms).except_(skip).emit(event, data)

    def broadcast(self, event: str, data: Any) -> int:
        """Send ``event`` to every connected socket."""
        if event in EVENTS:
            data = validate_event(event, data)
        return self.server.emit(event, data)

    def emit_to_user(self, user_id: str, event: str, data: Any) -> int:
        """Send an event to every tab of one user."""
        return self.emit(event, data, to=[user_room(user_id)])

    def emit_segmentation_update(self, user_id: str, update: Any) -> int:
        """Send a ``segmentation-update`` to one user (``update``: a SegmentationUpdate or dict)."""
        return self.emit("segmentation-update", _wire(update), to=[user_room(user_id)])

    def emit_queue_stats_update(self, project_id: str, stats: Any) -> int:
        """Send a ``queue-stats-update`` to everyone on a project."""
        return self.emit("queue-stats-update", _wire(stats), to=[project_room(project_id)])

    def emit_parallel_processing_status(self, status: Any) -> int:
        """Send the ``parallel-processing-status`` to every connected socket."""
        return self.broadcast("parallel-processing-status", _wire(status))

    def broadcast_thumbnail_update(self, project_id: str, update: Any) -> int:
        """Send a ``thumbnail-update`` to everyone on a project."""
        return self.emit("thumbnail-update", _wire(update), to=[project_room(project_id)])

    # -- acting on users -------------------------------------------------------------------

    def sockets_of(self, user_id: str) -> list[Socket]:
        return list(self.connections.get(user_id, {}).values())

    def join_rooms(self, user_id: str, rooms: Iterable[str]) -> int:
        """Put every socket of a user in ``rooms``; returns how many sockets."""
        rooms = list(rooms)
        sockets = self.sockets_of(user_id)
        for socket in sockets:
            socket.join(*rooms)
        for saved in self._saved_sessions(user_id):
            saved.rooms.update(rooms)
        return len(sockets)

    def _saved_sessions(self, user_id: str) -> list[Saved]:
        """The user's sockets that are away but may be recovered (they follow joins, leaves
        and logouts too, so a recovered tab has the rooms it would have had)."""
        recovery = self.server.main.adapter.recovery
        if recovery is None:
            return []
        return [saved for saved in recovery.saved() if saved.data.get("user_id") == user_id]

    def leave_rooms(self, user_id: str, rooms: Iterable[str]) -> int:
        """Take every socket of a user out of ``rooms`` (e.g. access revoked); returns how many."""
        rooms = list(rooms)
        sockets = self.sockets_of(user_id)
        if sockets:
            self._revocations[user_id] = self._revocations.get(user_id, 0) + 1
        for socket in sockets:
            socket.leave(*rooms)
        for saved in self._saved_sessions(user_id):
            saved.rooms.difference_update(rooms)
        return len(sockets)

    def revoke_project(self, user_id: str, project_id: str) -> int:
        """Access to a project was revoked: the user's sockets leave its room at once."""
        invalidate = getattr(self.store, "invalidate", None)
        if invalidate is not None:
            invalidate(user_id=user_id, project_id=project_id)
        return self.leave_rooms(user_id, [project_room(project_id)])

    def disconnect_user(self, user_id: str) -> int:
        """Disconnect every socket of a user (logout): final, the client does not reconnect."""
        sockets = self.sockets_of(user_id)
        for socket in sockets:
            socket.disconnect()
        recovery = self.server.main.adapter.recovery
        if recovery is not None:
            recovery.forget(lambda saved: saved.data.get("user_id") == user_id)
        return len(sockets)

    # -- across the cluster (every node through Redis; this node only without one) --------

    @property
    def clustered(self) -> bool:
        return self.server.cluster is not None

    async def emit_everywhere(
        self, event: str, data: Any, *, to: Iterable[str], except_: Iterable[str] = ()
    ) -> int:
        """:meth:`emit` on every node; ``data`` must be validated already.

        Returns:
            How many sockets it reached on all nodes.

        Raises:
            hub.cluster.ClusterError: Redis or a node did not answer; ``partial`` holds the
                sockets reached as far as is known (this node's at least).
        """
        rooms = [to] if isinstance(to, str) else list(to)
        if not rooms:
            raise ValueError("emit needs at least one room in 'to'")
        skip = [except_] if isinstance(except_, str) else list(except_)
        return await self.server.to(rooms).except_(skip).everywhere.emit(event, data)

    async def join_rooms_everywhere(self, user_id: str, rooms: Iterable[str]) -> int:
        """:meth:`join_rooms` on every node; returns this node's sockets (the other nodes act
        on the request as they read it, without a count)."""
        rooms = list(rooms)
        local = self.join_rooms(user_id, rooms)
        await self._edit_shared(user_id, lambda saved: saved.rooms.update(rooms))
        if self.clustered:
            await self.server.to(user_room(user_id)).everywhere.join(*rooms)
        return local

    async def leave_rooms_everywhere(self, user_id: str, rooms: Iterable[str]) -> int:
        """:meth:`leave_rooms` on every node; as :meth:`join_rooms_everywhere`."""
        rooms = list(rooms)
        local = self.leave_rooms(user_id, rooms)
        await self._edit_shared(user_id, lambda saved: saved.rooms.difference_update(rooms))
        if self.clustered:
            await self.server.to(user_room(user_id)).everywhere.leave(*rooms)
        return local

    async def revoke_project_everywhere(self, user_id: str, project_id: str) -> int:
        """:meth:`revoke_project` on every node."""
        local = self.revoke_project(user_id, project_id)
        room = project_room(project_id)
        await self._edit_shared(user_id, lambda saved: saved.rooms.discard(room))
        if self.clustered:
            await self.server.to(user_room(user_id)).everywhere.leave(project_room(project_id))
        return local

    async def disconnect_user_everywhere(self, user_id: str) -> int:
        """:meth:`disconnect_user` on every node."""
        local = self.disconnect_user(user_id)
        await self._edit_shared(user_id, None)
        if self.clustered:
            await self.server.to(user_room(user_id)).everywhere.disconnect()
        return local

    async def _edit_shared(self, user_id: str, change: Callable[[Saved], None] | None) -> None:
        """The user's sessions kept in Redis for recovery follow a join, a leave or (without
        ``change``) a logout too, whichever node the tab comes back to.

        Raises:
            hub.cluster.ClusterUnavailable: Redis cannot be reached.
        """
        if self.sessions is not None:
            await self.sessions.edit(
                "/", lambda saved: saved.data.get("user_id") == user_id, change, group=user_id
            )

    # -- serving ---------------------------------------------------------------------------

    async def shutdown(self) -> bool:
        """Shut down gracefully (SIGTERM): the internal API stops taking emits (503, so no
        emit it accepted is lost: each was written to its sockets' queues already), new
        connections are refused, and every client is closed at the Engine.IO level after what
        was queued for it, so it reconnects elsewhere. Waits at most ``shutdown_seconds``.

        Returns:
            Whether every client was let go in time.
        """
        self.shutting_down = True
        log.info("shutting down: closing %d connections", len(self.server.engine.sockets))
        done = await self.server.shutdown(self.config.shutdown_seconds)
        if not done:
            log.warning(
                "shutdown deadline passed with %d connections open",
                len(self.server.engine.sockets),
            )
        return done

    async def serve(
        self, *, task_status: trio.TaskStatus[HubAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the Socket.IO endpoint and the internal API until cancelled.

        ``task_status`` is started with the bound addresses (a port of 0 picks a free one).
        """
        from hub.app.internal import InternalAPI
        from hub.transport.native import Limits, serve
        from hub.transport.router import Router

        config = self.config
        internal = InternalAPI(self)
        if config.internal_port is None:
            self.server.route("/internal/", internal)
        # /health, /ready, /metrics: on the internal port when there is one (hub.app.metrics).
        public_health, internal_health = health_routes(self)
        for prefix, app in public_health:
            self.server.route(prefix, app)
        try:
            async with trio.open_nursery() as nursery:
                if self.sessions is not None:
                    # Cancelled with the rest, it writes what is queued before it ends.
                    await nursery.start(self.sessions.run)
                public = await nursery.start(self.server.serve, config.host, config.port)
                internal_address = public
                if config.internal_port is not None:
                    limits = Limits(max_body_bytes=config.max_internal_body)
                    internal_address = await nursery.start(
                        functools.partial(serve, limits=limits),
                        Router([("/internal/", internal), *internal_health]),
                        config.internal_host or config.host,
                        config.internal_port,
                    )
                log.info(
                    "hub (%s) on http://%s:%d%s, internal API on http://%s:%d/internal/",
                    config.env,
                    *public,
                    config.path,
                    *internal_address,
                )
                log.info(
                    "/health, /ready and /metrics on http://%s:%d%s",
                    *internal_address,
                    " (/metrics with the emit token)" if health_needs_token(config) else "",
                )
                self.accepting = True
                task_status.started(HubAddresses(public, internal_address))
        finally:
            self.accepting = False
            with trio.CancelScope(shield=True):
                await self.store.aclose()


@attrs.frozen
class HubAddresses:
    """Where a running hub listens."""

    public: tuple[str, int]
    internal: tuple[str, int]

    @property
    def url(self) -> str:
        return f"http://{self.public[0]}:{self.public[1]}"

    @property
    def internal_url(self) -> str:
        return f"http://{self.internal[0]}:{self.internal[1]}"
