"""A python-socketio ``AsyncClient`` driver for hub's interop tests (asyncio, own process).

Usage: ``python py_client.py '<options as JSON>'``

The same line protocol as ``node_client.mjs``: it prints one JSON object per line for each thing
it observes (``"ev"`` names it) and reads commands from stdin, one JSON object per line; it exits
when stdin closes. Bytes travel as ``{"$bytes": "<hex>", "$type": "<Python type>"}``.

Options: ``url`` (the server, without namespace), ``namespace`` (default ``/``), ``transports``,
``auth``. Commands: ``{"op": "emit", "event", "args", "ack": bool, "tag"}`` (the ack arrives as
``{"ev": "ack", "tag", "args"}``), ``{"op": "call", "event", "args", "tag", "timeout"}``
(``await sio.call(...)``; prints ``{"ev": "call_result", "tag", "result"}``), ``{"op": "state"}``
and ``{"op": "close"}``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
from typing import Any

import socketio


def enc(value: Any) -> Any:
    """An observed value as JSON, keeping the Python type of binary data."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex(), "$type": type(value).__name__}
    if isinstance(value, list | tuple):
        return [enc(item) for item in value]
    if isinstance(value, dict):
        return {str(key): enc(item) for key, item in value.items()}
    return value


def dec(value: Any) -> Any:
    """Command arguments from JSON: ``{"$bytes": hex}`` becomes ``bytes``."""
    if isinstance(value, list):
        return [dec(item) for item in value]
    if isinstance(value, dict):
        if isinstance(value.get("$bytes"), str):
            return bytes.fromhex(value["$bytes"])
        return {key: dec(item) for key, item in value.items()}
    return value


def emit_line(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def read_commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(options: dict[str, Any]) -> int:
    namespace: str = options.get("namespace", "/")
    sio = socketio.AsyncClient(reconnection=False)

    def transport() -> str | None:
        try:
            return str(sio.transport())
        except Exception:
            return None

    async def on_connect() -> None:
        emit_line({"ev": "connect", "id": sio.get_sid(namespace), "transport": transport()})

    async def on_connect_error(*args: Any) -> None:
        emit_line({"ev": "connect_error", "args": enc(args)})

    async def on_disconnect(*args: Any) -> None:
        emit_line({"ev": "disconnect", "args": enc(args)})

    async def on_any(event: str, *args: Any) -> Any:
        emit_line({"ev": "event", "name": event, "args": enc(args)})
        # The ack, when the server asked for one: the same arguments back.
        return tuple(args)

    sio.on("connect", on_connect, namespace=namespace)
    sio.on("connect_error", on_connect_error, namespace=namespace)
    sio.on("disconnect", on_disconnect, namespace=namespace)
    sio.on("*", on_any, namespace=namespace)

    emit_line({"ev": "started", "version": importlib.metadata.version("python-socketio")})
    try:
        await sio.connect(
            options["url"],
            transports=options.get("transports"),
            namespaces=[namespace],
            auth=options.get("auth"),
            wait_timeout=options.get("wait_timeout", 5),
        )
    except socketio.exceptions.ConnectionError as exc:
        emit_line({"ev": "connect_failed", "type": type(exc).__name__, "args": enc(list(exc.args))})
        return 0

    commands = await read_commands()
    while line := await commands.readline():
        if not line.strip():
            continue
        command: dict[str, Any] = json.loads(line)
        op = command.get("op")
        args = dec(command.get("args", []))
        tag = command.get("tag")
        if op == "emit":
            if command.get("ack"):

                def callback(*ack_args: Any, tag: Any = tag) -> None:
                    emit_line({"ev": "ack", "tag": tag, "args": enc(ack_args)})

                await sio.emit(
                    command["event"], tuple(args), namespace=namespace, callback=callback
                )
            else:
                await sio.emit(command["event"], tuple(args), namespace=namespace)
        elif op == "call":
            try:
                result = await sio.call(
                    command["event"],
                    tuple(args),
                    namespace=namespace,
                    timeout=command.get("timeout", 5),
                )
            except socketio.exceptions.TimeoutError:
                emit_line({"ev": "call_timeout", "tag": tag})
            else:
                emit_line({"ev": "call_result", "tag": tag, "result": enc(result)})
        elif op == "state":
            emit_line(
                {
                    "ev": "state",
                    "tag": tag,
                    "connected": sio.connected,
                    "id": sio.get_sid(namespace),
                    "transport": transport(),
                }
            )
        elif op == "close":
            break
        else:
            emit_line({"ev": "bad_command", "command": command})
    await sio.disconnect()
    emit_line({"ev": "closed"})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
