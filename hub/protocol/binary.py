"""Binary attachments: placeholders taken out on encode and put back on decode.

The spec (socket.io-protocol, "Packet encoding")::

    <packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>]
        [JSON-stringified payload without binary]      (one line in the spec)

    + binary attachments extracted

and its example::

    52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]

    + <Buffer <01 02>>
    + <Buffer <03 04>>

Each binary value in the payload is replaced by ``{"_placeholder":true,"num":k}`` and sent as
the k-th attachment, one Engine.IO binary message each, right after the text packet.

socket.io-parser puts a buffer back wherever a dict has ``_placeholder === true`` and a ``num``
in range, and ignores duplicates, missing numbers and extra keys. We are stricter: every
placeholder is exactly ``{"_placeholder": true, "num": <int>}``, and the numbers are
``0 .. attachments - 1``, each used once. That is what every encoder writes, and it lets the
decoder refuse a bad packet as soon as its text arrives, before any attachment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from hub.errors import LocalProtocolError, SocketIOError

__all__ = ["Extractor", "check_no_literal_placeholders", "find_placeholders", "iter_nodes"]

_PLACEHOLDER_KEYS = frozenset({"_placeholder", "num"})

# What socket.io-parser's isBinary() recognises, in Python terms: "Buffer | ArrayBuffer |
# TypedArray | DataView". Blob and File have no Python equivalent.
_BINARY_TYPES = (bytes, bytearray, memoryview)


def iter_nodes(root: Any) -> Iterator[tuple[Any, Any, Any]]:
    """Walk a JSON-like value without recursion (its depth is the peer's choice).

    Args:
        root: a list, tuple or dict; other values have no children.

    Returns:
        An iterator of ``(container, key, child)`` for every list/tuple item and dict value
        below ``root``, in no particular order. Dict keys are the ``key`` of their value.
    """
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            yield node, key, child
            if isinstance(child, list | tuple | dict):
                stack.append(child)


def _is_placeholder_like(value: Any) -> bool:
    # socket.io-parser, reconstructPacket(): `if (data && data._placeholder === true)`.
    return isinstance(value, dict) and value.get("_placeholder") is True


class Extractor:
    """The ``default`` hook of :func:`json.dumps` that swaps binary values for placeholders.

    :func:`json.dumps` calls it, in serialisation order, for every value it cannot encode.

    Attributes:
        buffers: the attachments taken out so far; ``buffers[k]`` is placeholder ``num`` k.
    """

    def __init__(self) -> None:
        self.buffers: list[bytes] = []

    def __call__(self, value: object) -> dict[str, Any]:
        """Replace one binary value by its placeholder.

        Args:
            value: the value :func:`json.dumps` could not encode.

        Returns:
            ``{"_placeholder": True, "num": k}``, in that key order (as socket.io-parser writes).

        Raises:
            TypeError: ``value`` is neither binary nor JSON (``json.dumps`` passes it on).
        """
        if isinstance(value, _BINARY_TYPES):
            placeholder = {"_placeholder": True, "num": len(self.buffers)}
            self.buffers.append(bytes(value))
            return placeholder
        raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def check_no_literal_placeholders(text: str, value: Any, attachments: int) -> None:
    """Refuse a binary payload that also holds a dict that looks like a placeholder.

    In a BINARY_EVENT or BINARY_ACK the peer would take such a dict for an attachment.

    Args:
        text: the payload's JSON, placeholders in.
        value: the payload as the application gave it, before placeholders went in.
        attachments: how many placeholders went in.

    Raises:
        LocalProtocolError: a dict of the application's has ``"_placeholder": True``.
    """
    # Each placeholder we wrote is `{"_placeholder":true,"num":k}`; a dict of the application's
    # with that key can only be there if the key occurs more often than that. Only then walk.
    if text.count('"_placeholder":') <= attachments:
        return
    for _container, _key, child in iter_nodes(value):
        if _is_placeholder_like(child):
            raise LocalProtocolError(
                "a dict with '_placeholder': True cannot be sent beside binary data:"
                " the peer would take it for an attachment"
            )


def find_placeholders(
    payload: list[Any], attachments: int, what: str
) -> list[Callable[[bytes], None]]:
    """Check the placeholders of a binary packet and say where each attachment goes.

    Args:
        payload: the decoded JSON array of a BINARY_EVENT or BINARY_ACK packet.
        attachments: the count announced in the packet's ``<count>-`` header.
        what: the packet type's name, for error messages.

    Returns:
        One setter per attachment: ``setters[k](data)`` puts attachment k in place of its
        placeholder (the payload is modified in place).

    Raises:
        SocketIOError: a placeholder is malformed, out of range or repeated, or an announced
            attachment has no placeholder.
    """
    setters: list[Callable[[bytes], None] | None] = [None] * attachments
    for container, key, child in iter_nodes(payload):
        if not _is_placeholder_like(child):
            continue
        if child.keys() != _PLACEHOLDER_KEYS:
            extra = sorted(str(k) for k in child.keys() - _PLACEHOLDER_KEYS)
            if extra:
                # The keys are the peer's: a few, cut short, so the error stays one short line.
                keys = [k if len(k) <= 24 else k[:24] + "…" for k in extra[:3]]
                raise SocketIOError(f"{what} placeholder has unexpected keys: {keys}")
            raise SocketIOError(f"{what} placeholder has no 'num'")
        num = child["num"]
        if not isinstance(num, int) or isinstance(num, bool):
            raise SocketIOError(
                f"{what} placeholder 'num' must be an integer, found {type(num).__name__}"
            )
        if not 0 <= num < attachments:
            raise SocketIOError(
                f"{what} placeholder num {num} is out of range: the packet announces"
                f" {attachments} attachment(s)"
            )
        if setters[num] is not None:
            raise SocketIOError(f"{what} has two placeholders with num {num}")
        setters[num] = _setter(container, key)
    for num, setter in enumerate(setters):
        if setter is None:
            raise SocketIOError(
                f"{what} announces {attachments} attachment(s) but has no placeholder"
                f" with num {num}"
            )
    return [setter for setter in setters if setter is not None]


def _setter(container: Any, key: Any) -> Callable[[bytes], None]:
    def put(data: bytes) -> None:
        container[key] = data

    return put
