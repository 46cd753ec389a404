"""The type language of the event catalogue (:mod:`hub.app.events`), and what reads it.

A payload is a frozen, slotted attrs class deriving from :class:`Payload`. Its annotations are
its schema; each field's type is one of:

- ``str`` (any string), a :class:`~enum.StrEnum` subclass (one of its values), a
  :class:`Payload` subclass (a nested object), ``dict[str, Any]`` (any JSON object);
- ``Annotated[T, field_type]``, a :class:`FieldType` carrying ranges and formats. The aliases
  :data:`Id`, :data:`NonEmpty`, :data:`Count`, :data:`PositiveInt`, :data:`Percent`,
  :data:`Millis` and :data:`Timestamp` are the ones the catalogue uses;
- ``tuple[T, ...]``: a JSON array of ``T``;
- ``T | None`` with the default ``None``: an optional field. Every other field is required.

Python names are snake_case, wire names camelCase (``image_id`` is ``"imageId"``). The class
docstring's ``Attributes:`` section describes each field; those descriptions are copied into
the JSON Schema and the TypeScript declarations, so a field without one is refused.

From these one place derives the check made when an instance is built
(:meth:`Payload.__attrs_post_init__`), reading a wire object (:func:`read`), writing one
(:func:`write`), and the two renderings (:func:`json_schema_document`,
:func:`typescript_document`). The rules the check and the JSON Schema share:

- an unknown key is refused, and so is a missing required one; an optional key may be absent
  or ``null``, which mean the same and are written as absent;
- a boolean is not a number; an integer is a number with no fractional part (JSON Schema's
  "integer", so ``3.0`` is read as ``3``); NaN and the infinities are refused;
- a timestamp is an RFC 3339 date-time with a time zone, as JavaScript's
  ``Date.prototype.toISOString()`` writes it (``2024-05-01T12:00:00.000Z``).

The one rule the schema cannot state: the day must exist (its pattern lets ``02-30`` through;
the check here refuses it).
"""

from __future__ import annotations

import abc
import datetime
import enum
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Final, TypeAlias, TypeVar, cast

import attrs

__all__ = [
    "Choice",
    "Count",
    "EventValidationError",
    "Field",
    "FieldType",
    "Id",
    "Integer",
    "IsoDateTime",
    "JsonObject",
    "ListOf",
    "Millis",
    "NonEmpty",
    "Number",
    "Payload",
    "Percent",
    "PositiveInt",
    "Struct",
    "Text",
    "Timestamp",
    "fields_of",
    "json_schema_document",
    "read",
    "typescript_document",
    "write",
]


class EventValidationError(ValueError):
    """A payload broke its event's schema.

    ``str(exc)`` reads like ``segmentation-update.progress: must be between 0 and 100``.

    Attributes:
        event: the wire event name (for a nested object built on its own, its class name).
        field: the wire path of the offending value, e.g. ``"progress"``,
            ``"sharedWith.email"`` or ``"data.items[2]"``; ``""`` for the payload as a whole.
        message: what is wrong with it.
    """

    def __init__(self, event: str, field: str, message: str) -> None:
        super().__init__(f"{event}.{field}: {message}" if field else f"{event}: {message}")
        self.event = event
        self.field = field
        self.message = message


class _Invalid(Exception):
    """A field type refused a value: raised inside, turned into EventValidationError at the edge."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    """What a JSON reader would call ``value``, for "must be X, not Y"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a fractional number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _wrong_type(path: str, expected: str, value: object) -> _Invalid:
    return _Invalid(path, f"must be {expected}, not {_kind(value)}")


# -- field types -------------------------------------------------------------------------------


class FieldType(abc.ABC):
    """How a field's value is checked, read from the wire, written to it, and described.

    Attributes:
        python_type: the type an ``Annotated`` alias must wrap to carry this field type.
    """

    __slots__ = ()
    python_type: ClassVar[type]

    @abc.abstractmethod
    def check(self, value: object, path: str) -> None:
        """Raise :class:`_Invalid` unless ``value`` is a valid Python value of the field."""

    def read(self, value: object, path: str) -> Any:
        """The Python value of the wire value ``value``; raises :class:`_Invalid`."""
        self.check(value, path)
        return value

    def write(self, value: Any) -> Any:
        """The wire (JSON) value of the Python value ``value``."""
        return value

    @abc.abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the wire value; ``$ref`` to ``#/$defs/<name>`` for named types."""

    @abc.abstractmethod
    def typescript(self) -> str:
        """The TypeScript type of the wire value."""

    def named_types(self) -> Iterator[type]:
        """The enums and payload classes this type refers to by name."""
        return iter(())


def _check_range(value: float, minimum: float | None, maximum: float | None, path: str) -> None:
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            raise _Invalid(path, f"must be between {minimum} and {maximum}")
    elif minimum is not None and value < minimum:
        raise _Invalid(path, f"must be at least {minimum}")
    elif maximum is not None and value > maximum:
        raise _Invalid(path, f"must be at most {maximum}")


def _range_schema(minimum: float | None, maximum: float | None) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


@attrs.frozen
class Text(FieldType):
    """A string, at least ``min_length`` characters (code points) long."""

    python_type: ClassVar[type] = str
    min_length: int = 0

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, str):
            raise _wrong_type(path, "a string", value)
        if len(value) < self.min_length:
            if self.min_length == 1:
                raise _Invalid(path, "must not be empty")
            raise _Invalid(path, f"must be at least {self.min_length} characters long")

    def json_schema(self) -> dict[str, Any]:
        if self.min_length:
            return {"type": "string", "minLength": self.min_length}
        return {"type": "string"}

    def typescript(self) -> str:
        return "string"


@attrs.frozen
class Integer(FieldType):
    """A whole number between ``minimum`` and ``maximum`` (inclusive, ``None`` for no bound)."""

    python_type: ClassVar[type] = int
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: object, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, "an integer", value)
        _check_range(value, self.minimum, self.maximum, path)

    def read(self, value: object, path: str) -> Any:
        # JSON Schema: "integer" matches "any number with a zero fractional part".
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        self.check(value, path)
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", **_range_schema(self.minimum, self.maximum)}

    def typescript(self) -> str:
        return "number"


@attrs.frozen
class Number(FieldType):
    """A finite number (an ``int`` or a ``float``) between ``minimum`` and ``maximum``."""

    python_type: ClassVar[type] = float
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: object, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(path, "a number", value)
        if not math.isfinite(value):
            raise _Invalid(path, "must be a finite number")
        _check_range(value, self.minimum, self.maximum, path)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "number", **_range_schema(self.minimum, self.maximum)}

    def typescript(self) -> str:
        return "number"


# RFC 3339, section 5.6 "date-time", with an upper-case T and Z (what toISOString() writes).
_DATE_TIME: Final = (
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_DATE_TIME_RE: Final = re.compile(_DATE_TIME)


@attrs.frozen
class IsoDateTime(FieldType):
    """A timestamp: an RFC 3339 date-time string with a time zone."""

    python_type: ClassVar[type] = str

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, str):
            raise _wrong_type(path, "a date-time string", value)
        try:
            if _DATE_TIME_RE.fullmatch(value) is None:
                raise ValueError(value)
            datetime.datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid(
                path, "must be an ISO-8601 date-time with a time zone, like 2024-05-01T12:00:00Z"
            ) from None

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time", "pattern": _DATE_TIME}

    def typescript(self) -> str:
        return "IsoDateTime"


@attrs.frozen
class Choice(FieldType):
    """One value of a :class:`~enum.StrEnum`; a member in Python, its value on the wire."""

    python_type: ClassVar[type] = str
    enum: type[enum.StrEnum]

    def _allowed(self) -> str:
        return "one of " + ", ".join(repr(member.value) for member in self.enum)

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, self.enum):
            raise _Invalid(path, f"must be a {self.enum.__name__}: {self._allowed()}")

    def read(self, value: object, path: str) -> Any:
        if isinstance(value, str) and value in self.enum._value2member_map_:
            return self.enum(value)
        raise _Invalid(path, f"must be {self._allowed()}")

    def write(self, value: Any) -> Any:
        return value.value

    def json_schema(self) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{self.enum.__name__}"}

    def typescript(self) -> str:
        return self.enum.__name__

    def named_types(self) -> Iterator[type]:
        yield self.enum


@attrs.frozen
class ListOf(FieldType):
    """A JSON array of ``item``; a tuple in Python."""

    python_type: ClassVar[type] = tuple
    item: FieldType

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, tuple):
            raise _wrong_type(path, "a tuple", value)
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")

    def read(self, value: object, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise _wrong_type(path, "an array", value)
        return tuple(self.item.read(item, f"{path}[{i}]") for i, item in enumerate(value))

    def write(self, value: Any) -> Any:
        return [self.item.write(item) for item in value]

    def json_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.json_schema()}

    def typescript(self) -> str:
        return f"{self.item.typescript()}[]"

    def named_types(self) -> Iterator[type]:
        return self.item.named_types()


@attrs.frozen
class Struct(FieldType):
    """A nested object: an instance of the payload class ``cls``."""

    python_type: ClassVar[type] = object
    cls: type[Payload]

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, self.cls):
            raise _wrong_type(path, f"a {self.cls.__name__}", value)

    def read(self, value: object, path: str) -> Any:
        return _read(self.cls, value, path)

    def write(self, value: Any) -> Any:
        return write(value)

    def json_schema(self) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{self.cls.__name__}"}

    def typescript(self) -> str:
        return self.cls.__name__

    def named_types(self) -> Iterator[type]:
        yield self.cls


def _json_copy(value: object, path: str) -> Any:
    """A copy of the JSON value ``value`` (tuples become lists); raises :class:`_Invalid`."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(path, "must be a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(path, f"keys must be strings, not {_kind(key)}")
            copy[key] = _json_copy(item, _key_path(path, key))
        return copy
    raise _Invalid(path, f"must be a JSON value, not {_kind(value)}")


@attrs.frozen
class JsonObject(FieldType):
    """Any JSON object (free-form data). Read and written as a copy."""

    python_type: ClassVar[type] = dict

    def check(self, value: object, path: str) -> None:
        self.read(value, path)

    def read(self, value: object, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise _wrong_type(path, "an object", value)
        return _json_copy(value, path)

    def write(self, value: Any) -> Any:
        return _json_copy(value, "")

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def typescript(self) -> str:
        return "Record<string, unknown>"


Id: TypeAlias = Annotated[str, Text(min_length=1)]
"""An identifier (of a project, image, user, batch...): a non-empty string."""
NonEmpty: TypeAlias = Annotated[str, Text(min_length=1)]
"""Text that must say something: a title, a file name, an error message."""
Count: TypeAlias = Annotated[int, Integer(minimum=0)]
"""How many of something (images, files, bytes, workers): an integer >= 0."""
PositiveInt: TypeAlias = Annotated[int, Integer(minimum=1)]
"""An integer >= 1: a pixel dimension, a worker limit."""
Percent: TypeAlias = Annotated[float, Number(minimum=0, maximum=100)]
"""A percentage: a number from 0 to 100."""
Millis: TypeAlias = Annotated[float, Number(minimum=0)]
"""A duration in milliseconds: a number >= 0."""
Timestamp: TypeAlias = Annotated[str, IsoDateTime()]
"""A point in time: an RFC 3339 date-time string, e.g. ``2024-05-01T12:00:00.000Z``."""


# -- payloads ----------------------------------------------------------------------------------


class Payload:
    """Base of the payload classes: checks every field when an instance is made.

    Subclasses are ``@attrs.frozen(kw_only=True)`` classes typed as the module docstring says.
    An event payload sets the class variable ``EVENT`` to its wire event name; a class nested
    in a payload leaves it empty.

    Raises:
        EventValidationError: from the constructor, when a field's value is not valid.
    """

    __slots__ = ()
    EVENT: ClassVar[str] = ""

    def __attrs_post_init__(self) -> None:
        cls = type(self)
        try:
            for field in fields_of(cls):
                value = getattr(self, field.name)
                if value is not None or not field.optional:
                    field.type.check(value, field.wire)
        except _Invalid as exc:
            raise EventValidationError(cls.EVENT or cls.__name__, exc.path, exc.message) from None


P = TypeVar("P", bound=Payload)


@attrs.frozen
class Field:
    """One field of a payload class, as :func:`fields_of` resolves it.

    Attributes:
        name: the Python attribute name (snake_case).
        wire: the key on the wire (camelCase).
        type: how the value is checked, read, written and described.
        optional: whether the field may be absent (its Python value is then ``None``).
        description: the field's description, from the class docstring.
    """

    name: str
    wire: str
    type: FieldType
    optional: bool
    description: str


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _field_type(hint: Any, where: str) -> FieldType:
    """The field type of a (non-optional) annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        found = [extra for extra in hint.__metadata__ if isinstance(extra, FieldType)]
        if len(found) != 1 or args[0] is not found[0].python_type:
            raise TypeError(f"{where}: Annotated needs one field type matching {args[0]!r}")
        return found[0]
    if hint is str:
        return Text()
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return Choice(hint)
    if isinstance(hint, type) and issubclass(hint, Payload):
        return Struct(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return ListOf(_field_type(args[0], where))
    if origin is dict and args == (str, Any):
        return JsonObject()
    raise TypeError(f"{where}: {hint!r} is not a payload field type (see hub.app.events_schema)")


def _docs(cls: type) -> tuple[str, dict[str, str]]:
    """The summary of a class docstring, and its ``Attributes:`` descriptions by name."""
    doc = inspect.cleandoc(cls.__doc__ or "").replace("``", "`")
    summary = " ".join(doc.split("\n\n")[0].split())
    lines = doc.splitlines()
    described: dict[str, list[str]] = {}
    if "Attributes:" in lines:
        for line in lines[lines.index("Attributes:") + 1 :]:
            if match := re.fullmatch(r" {4}(\w+): (.*)", line):
                described[match[1]] = [match[2]]
            elif line.startswith(" " * 8) and described:
                described[list(described)[-1]].append(line.strip())
            else:
                break
    return summary, {name: " ".join(words) for name, words in described.items()}


_FIELDS: dict[type, tuple[Field, ...]] = {}


def fields_of(cls: type[Payload]) -> tuple[Field, ...]:
    """The fields of a payload class, in declaration order.

    Raises:
        TypeError: a field's annotation is not one of the types the module docstring lists, an
            optional field does not default to ``None`` (or a required one has a default), or
            a field has no description.
    """
    if cls in _FIELDS:
        return _FIELDS[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    _, described = _docs(cls)
    fields = []
    for attribute in attrs.fields(cast(Any, cls)):
        where = f"{cls.__name__}.{attribute.name}"
        hint = hints[attribute.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if optional:
            if len(args) != 2 or args[1] is not type(None):
                raise TypeError(f"{where}: the only union allowed is 'T | None'")
            hint = args[0]
        if attribute.default is not (None if optional else attrs.NOTHING):
            raise TypeError(f"{where}: optional fields, and only they, default to None")
        if attribute.name not in described:
            raise TypeError(f"{where} is not described in the class docstring's Attributes")
        description = described[attribute.name]
        fields.append(
            Field(
                name=attribute.name,
                wire=_camel(attribute.name),
                type=_field_type(hint, where),
                optional=optional,
                description=description[:1].upper() + description[1:],
            )
        )
    _FIELDS[cls] = tuple(fields)
    return _FIELDS[cls]


def _read(cls: type[P], data: object, path: str) -> P:
    if not isinstance(data, Mapping):
        raise _wrong_type(path, "an object", data)
    fields = fields_of(cls)
    known = {field.wire for field in fields}
    for key in data:
        if key not in known:
            raise _Invalid(_key_path(path, str(key)), "unknown field")
    values = {}
    for field in fields:
        where = _key_path(path, field.wire)
        if data.get(field.wire) is None and field.optional:
            continue
        if field.wire not in data:
            raise _Invalid(where, "is required")
        values[field.name] = field.type.read(data[field.wire], where)
    return cls(**values)


def read(cls: type[P], data: object) -> P:
    """The payload of class ``cls`` that the wire object ``data`` (decoded JSON) holds.

    Raises:
        EventValidationError: ``data`` is not a valid payload of ``cls``: not an object, an
            unknown or a missing key, a value of the wrong type, out of range or not allowed.
            Its ``field`` names the (first) offending key.
    """
    try:
        return _read(cls, data, "")
    except _Invalid as exc:
        raise EventValidationError(cls.EVENT or cls.__name__, exc.path, exc.message) from None


def write(payload: Payload) -> dict[str, Any]:
    """The wire object of ``payload``: camelCase keys, optional fields that are ``None`` left out.

    Raises:
        TypeError: ``payload`` is not a payload class instance.
    """
    if not isinstance(payload, Payload):
        raise TypeError(f"not a payload: {payload!r}")
    wire = {}
    for field in fields_of(type(payload)):
        value = getattr(payload, field.name)
        if value is not None:
            wire[field.wire] = field.type.write(value)
    return wire


# -- renderings --------------------------------------------------------------------------------


def _named_types(events: Mapping[str, type[Payload]]) -> list[type]:
    """Every enum and payload class the events name, each after the ones it refers to."""
    found: dict[type, None] = {}

    def visit(named: type) -> None:
        if named in found:
            return
        if issubclass(named, Payload):
            for field in fields_of(named):
                for inner in field.type.named_types():
                    visit(inner)
        found[named] = None

    for cls in events.values():
        visit(cls)
    names = [named.__name__ for named in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two named types share a name: {sorted(names)}")
    return list(found)


def _object_schema(cls: type[Payload]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in fields_of(cls):
        schema = field.type.json_schema()
        if field.optional:
            schema = {"anyOf": [schema, {"type": "null"}]}
        properties[field.wire] = {**schema, "description": field.description}
    return {
        "title": cls.__name__,
        "description": _docs(cls)[0],
        "type": "object",
        "properties": properties,
        "required": [field.wire for field in fields_of(cls) if not field.optional],
        "additionalProperties": False,
    }


def json_schema_document(events: Mapping[str, type[Payload]], title: str) -> dict[str, Any]:
    """One JSON Schema (draft 2020-12) document describing ``events``.

    ``$defs`` holds one schema per payload class and per enum. The document itself describes
    an object whose properties are the event names, each a ``$ref`` to its payload's schema,
    so ``{"$ref": "<document>#/properties/<event name>"}`` validates one event's payload.
    """
    defs: dict[str, Any] = {}
    for named in _named_types(events):
        if issubclass(named, Payload):
            defs[named.__name__] = _object_schema(named)
        else:
            enum_type = cast(type[enum.StrEnum], named)
            defs[named.__name__] = {
                "title": named.__name__,
                "description": _docs(enum_type)[0],
                "type": "string",
                "enum": [member.value for member in enum_type],
            }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": "Each property is an event name; its value is that event's payload.",
        "type": "object",
        "properties": {name: {"$ref": f"#/$defs/{cls.__name__}"} for name, cls in events.items()},
        "additionalProperties": False,
        "$defs": defs,
    }


def _jsdoc(text: str, indent: str = "") -> str:
    text = text.replace("*/", "*\\/")
    return f"{indent}/** {text} */\n"


def typescript_document(events: Mapping[str, type[Payload]], header: str) -> str:
    """TypeScript declarations of ``events``.

    One ``export interface`` per payload class, one string-literal union per enum, the
    ``IsoDateTime`` alias of timestamps, and ``ServerToClientEvents`` mapping each event name
    to a listener of its payload: the shape socket.io-client's ``Socket<ServerToClientEvents>``
    takes. Optional fields are marked ``?`` (the server leaves them out rather than send null).
    """
    out = [f"// {line}\n" for line in header.splitlines()]
    out.append("\n" + _jsdoc(IsoDateTime.__doc__ or ""))
    out.append("export type IsoDateTime = string;\n")
    for named in _named_types(events):
        out.append("\n" + _jsdoc(_docs(named)[0]))
        if issubclass(named, Payload):
            out.append(f"export interface {named.__name__} {{\n")
            for field in fields_of(named):
                mark = "?" if field.optional else ""
                out.append(_jsdoc(field.description, "  "))
                out.append(f"  {field.wire}{mark}: {field.type.typescript()};\n")
            out.append("}\n")
        else:
            values = " | ".join(json.dumps(m.value) for m in cast(type[enum.StrEnum], named))
            out.append(f"export type {named.__name__} = {values};\n")
    out.append("\n" + _jsdoc("The events the server sends: `Socket<ServerToClientEvents>`."))
    out.append("export interface ServerToClientEvents {\n")
    for name, cls in events.items():
        out.append(f"  {json.dumps(name)}: (payload: {cls.__name__}) => void;\n")
    out.append("}\n")
    out.append("\n" + _jsdoc("The name of an event the server sends."))
    out.append("export type ServerEventName = keyof ServerToClientEvents;\n")
    return "".join(out)
