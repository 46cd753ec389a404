"""The event catalogue: every event's payload read, refused, written and exported.

Valid examples are written out by hand, one per event; the invalid inputs are made from them
by one rule at a time (a key dropped, a key added, a value of the wrong type, a boolean for a
number, a number out of range, a value outside an enum...). Each must be refused naming the
offending key, by the Python check and by the exported JSON Schema alike. The schema is
checked with the small validator below (``jsonschema`` is not a dependency); it knows exactly
the keywords the export uses and fails on any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.app import events
from hub.app.events import (
    EVENTS,
    BatchStarted,
    EventValidationError,
    Notification,
    NotificationType,
    ProjectShared,
    SegmentationStatus,
    SegmentationUpdate,
    SharePermission,
    ShareRecipient,
    SystemMessageLevel,
    UploadFileStatus,
    event_name,
    json_schema,
    parse_event,
    to_wire,
    typescript,
    validate_event,
)
from hub.app.events_schema import Count, Payload, fields_of

TS = "2024-05-01T12:00:00.000Z"

# Every event with its wire keys, exactly as the platform spells them: (required, optional).
WIRE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "segmentation-update": (
        ("imageId", "projectId", "status"),
        ("queueId", "error", "progress", "polygonCount", "processingTime"),
    ),
    "queue-stats-update": (
        ("projectId", "queued", "processing", "completed", "failed", "total"),
        ("userId", "queuePosition", "estimatedTime"),
    ),
    "upload-progress": (
        (
            "projectId",
            "batchId",
            "filename",
            "fileSize",
            "progress",
            "currentFileStatus",
            "filesCompleted",
            "filesTotal",
            "percentComplete",
            "timestamp",
        ),
        (),
    ),
    "upload-completed": (
        ("projectId", "batchId", "filesUploaded", "filesFailed", "timestamp"),
        ("imageIds", "totalBytes"),
    ),
    "upload-failed": (("projectId", "batchId", "filename", "error", "timestamp"), ()),
    "thumbnail-update": (
        ("projectId", "imageId", "thumbnailUrl"),
        ("polygonCount", "width", "height"),
    ),
    "parallel-processing-status": (
        ("activeWorkers", "maxWorkers", "queueLength", "processingImages", "timestamp"),
        ("averageProcessingTime",),
    ),
    "project-updated": (
        ("projectId", "updatedAt"),
        ("title", "description", "imageCount", "thumbnailUrl"),
    ),
    "project-deleted": (("projectId", "deletedAt"), ("deletedBy",)),
    "project-shared": (("projectId", "sharedBy", "sharedWith", "permission", "sharedAt"), ()),
    "project-unshared": (("projectId", "userId", "unsharedAt"), ("unsharedBy",)),
    "project-card-counts": (
        ("projectId", "imageCount", "segmentedCount", "processingCount", "failedCount"),
        (),
    ),
    "dashboard-metrics": (
        (
            "totalProjects",
            "totalImages",
            "segmentedImages",
            "processingImages",
            "queuedImages",
            "failedImages",
            "storageUsedBytes",
            "timestamp",
        ),
        ("storageLimitBytes", "averageProcessingTime"),
    ),
    "notification": (("id", "type", "title", "message", "createdAt"), ("link", "data")),
    "system-message": (("message", "level"), ("expiresAt",)),
    "batch-started": (
        ("batchId", "projectId", "imageCount", "startedAt"),
        ("imageIds", "model"),
    ),
    "batch-completed": (
        ("batchId", "projectId", "imageCount", "segmentedCount", "failedCount", "completedAt"),
        ("processingTime",),
    ),
}

# One valid payload per event with every key. Integer fields hold ints, number fields hold
# fractions: the rules below tell them apart by that.
FULL: dict[str, dict[str, Any]] = {
    "segmentation-update": {
        "imageId": "img-1",
        "projectId": "prj-1",
        "status": "failed",
        "queueId": "q-7",
        "error": "model crashed",
        "progress": 62.5,
        "polygonCount": 12,
        "processingTime": 1834.5,
    },
    "queue-stats-update": {
        "projectId": "prj-1",
        "queued": 3,
        "processing": 2,
        "completed": 40,
        "failed": 1,
        "total": 46,
        "userId": "usr-1",
        "queuePosition": 0,
        "estimatedTime": 12500.5,
    },
    "upload-progress": {
        "projectId": "prj-1",
        "batchId": "upl-1",
        "filename": "cells_01.tif",
        "fileSize": 1048576,
        "progress": 37.5,
        "currentFileStatus": "uploading",
        "filesCompleted": 4,
        "filesTotal": 10,
        "percentComplete": 43.75,
        "timestamp": TS,
    },
    "upload-completed": {
        "projectId": "prj-1",
        "batchId": "upl-1",
        "filesUploaded": 9,
        "filesFailed": 1,
        "timestamp": TS,
        "imageIds": ["img-1", "img-2"],
        "totalBytes": 9437184,
    },
    "upload-failed": {
        "projectId": "prj-1",
        "batchId": "upl-1",
        "filename": "broken.tif",
        "error": "unsupported format",
        "timestamp": TS,
    },
    "thumbnail-update": {
        "projectId": "prj-1",
        "imageId": "img-1",
        "thumbnailUrl": "/api/images/img-1/thumbnail",
        "polygonCount": 12,
        "width": 256,
        "height": 192,
    },
    "parallel-processing-status": {
        "activeWorkers": 3,
        "maxWorkers": 4,
        "queueLength": 17,
        "processingImages": 3,
        "timestamp": TS,
        "averageProcessingTime": 2100.5,
    },
    "project-updated": {
        "projectId": "prj-1",
        "updatedAt": TS,
        "title": "Liver slices",
        "description": "",
        "imageCount": 46,
        "thumbnailUrl": "/api/projects/prj-1/thumbnail",
    },
    "project-deleted": {"projectId": "prj-1", "deletedAt": TS, "deletedBy": "usr-1"},
    "project-shared": {
        "projectId": "prj-1",
        "sharedBy": "usr-1",
        "sharedWith": {"email": "bob@example.com", "userId": "usr-2"},
        "permission": "view",
        "sharedAt": TS,
    },
    "project-unshared": {
        "projectId": "prj-1",
        "userId": "usr-2",
        "unsharedAt": TS,
        "unsharedBy": "usr-1",
    },
    "project-card-counts": {
        "projectId": "prj-1",
        "imageCount": 46,
        "segmentedCount": 40,
        "processingCount": 5,
        "failedCount": 1,
    },
    "dashboard-metrics": {
        "totalProjects": 3,
        "totalImages": 120,
        "segmentedImages": 100,
        "processingImages": 5,
        "queuedImages": 10,
        "failedImages": 5,
        "storageUsedBytes": 524288000,
        "timestamp": TS,
        "storageLimitBytes": 10737418240,
        "averageProcessingTime": 1900.25,
    },
    "notification": {
        "id": "ntf-1",
        "type": "success",
        "title": "Segmentation finished",
        "message": "46 images segmented",
        "createdAt": TS,
        "link": "/projects/prj-1",
        "data": {"projectId": "prj-1", "counts": [40, 5, 1], "more": {"ok": True, "x": None}},
    },
    "system-message": {
        "message": "Maintenance at 22:00 UTC",
        "level": "warning",
        "expiresAt": "2024-05-01T22:30:00+02:00",
    },
    "batch-started": {
        "batchId": "seg-1",
        "projectId": "prj-1",
        "imageCount": 2,
        "startedAt": TS,
        "imageIds": ["img-1", "img-2"],
        "model": "hrnet",
    },
    "batch-completed": {
        "batchId": "seg-1",
        "projectId": "prj-1",
        "imageCount": 2,
        "segmentedCount": 1,
        "failedCount": 1,
        "completedAt": TS,
        "processingTime": 4200.5,
    },
}

ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("segmentation-update", "status"): (
        "queued",
        "processing",
        "segmented",
        "failed",
        "no_segmentation",
    ),
    ("upload-progress", "currentFileStatus"): ("uploading", "processing", "completed", "failed"),
    ("project-shared", "permission"): ("view", "edit"),
    ("notification", "type"): ("info", "success", "warning", "error"),
    ("system-message", "level"): ("info", "warning", "critical"),
}
PERCENT_KEYS = {"progress", "percentComplete"}
AT_LEAST_ONE = {"maxWorkers", "width", "height"}
TEXT_MAY_BE_EMPTY = {("project-updated", "description")}


def minimal(event: str) -> dict[str, Any]:
    required, _ = WIRE_KEYS[event]
    return {key: value for key, value in FULL[event].items() if key in required}


def is_timestamp_key(key: str) -> bool:
    return key == "timestamp" or key.endswith("At")


# -- valid payloads -------------------------------------------------------------------------------


def test_the_catalogue_holds_every_event() -> None:
    assert list(EVENTS) == list(WIRE_KEYS) == list(FULL)
    assert all(name == cls.EVENT for name, cls in EVENTS.items())
    with pytest.raises(TypeError):
        events.EVENTS["x"] = SegmentationUpdate  # type: ignore[index]


@pytest.mark.parametrize("event", list(EVENTS))
def test_wire_keys_are_camel_case_python_names_snake_case(event: str) -> None:
    fields = fields_of(EVENTS[event])
    required, optional = WIRE_KEYS[event]
    assert tuple(f.wire for f in fields if not f.optional) == required
    assert tuple(f.wire for f in fields if f.optional) == optional
    for field in fields:
        assert re.sub(r"_([a-z])", lambda m: m[1].upper(), field.name) == field.wire
        assert field.name == field.name.lower()


@pytest.mark.parametrize("event", list(EVENTS))
def test_a_full_payload_round_trips(event: str) -> None:
    payload = parse_event(event, FULL[event])
    assert type(payload) is EVENTS[event]
    assert event_name(payload) == event
    assert to_wire(payload) == FULL[event]
    assert validate_event(event, FULL[event]) == FULL[event]
    assert json.loads(json.dumps(to_wire(payload))) == FULL[event]
    assert parse_event(event, to_wire(payload)) == payload
    assert hash(payload) == hash(parse_event(event, FULL[event]))


@pytest.mark.parametrize("event", list(EVENTS))
def test_a_minimal_payload_round_trips(event: str) -> None:
    assert validate_event(event, minimal(event)) == minimal(event)


@pytest.mark.parametrize("event", [e for e in EVENTS if WIRE_KEYS[e][1]])
def test_null_optional_keys_are_left_out(event: str) -> None:
    data = {**minimal(event), **dict.fromkeys(WIRE_KEYS[event][1])}
    assert validate_event(event, data) == minimal(event)
    payload = parse_event(event, data)
    assert all(getattr(payload, f.name) is None for f in fields_of(EVENTS[event]) if f.optional)


def test_parsed_values_have_python_types() -> None:
    update = parse_event("segmentation-update", FULL["segmentation-update"])
    assert isinstance(update, SegmentationUpdate)
    assert update.status is SegmentationStatus.FAILED
    assert update.polygon_count == 12
    assert update.processing_time == 1834.5
    shared = parse_event("project-shared", FULL["project-shared"])
    assert isinstance(shared, ProjectShared)
    assert shared.shared_with == ShareRecipient(email="bob@example.com", user_id="usr-2")
    assert shared.permission is SharePermission.VIEW
    batch = parse_event("batch-started", FULL["batch-started"])
    assert batch.image_ids == ("img-1", "img-2")  # type: ignore[attr-defined]


def test_an_integral_float_is_read_as_an_integer() -> None:
    # JSON Schema's "integer" is any number with no fractional part.
    data = {**FULL["project-card-counts"], "imageCount": 46.0}
    assert validate_event("project-card-counts", data) == FULL["project-card-counts"]
    assert type(validate_event("project-card-counts", data)["imageCount"]) is int


def test_a_number_field_takes_an_integer() -> None:
    data = {**FULL["segmentation-update"], "progress": 100, "processingTime": 0}
    assert validate_event("segmentation-update", data) == data


@pytest.mark.parametrize(
    "stamp",
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+05:30", "2024-02-29T23:59:59.123456-08:00"],
)
def test_timestamps_taken(stamp: str) -> None:
    data = {**FULL["system-message"], "expiresAt": stamp}
    assert validate_event("system-message", data) == data


def test_validate_event_makes_a_fresh_object() -> None:
    data = json.loads(json.dumps(FULL["notification"]))
    wire = validate_event("notification", data)
    wire["data"]["counts"].append(99)
    assert data == FULL["notification"]
    payload = parse_event("notification", data)
    data["data"]["counts"].append(99)
    assert to_wire(payload) == FULL["notification"]


def test_unknown_events_are_a_key_error() -> None:
    with pytest.raises(KeyError):
        validate_event("no-such-event", {})
    with pytest.raises(KeyError):
        parse_event("connect", {})


# -- invalid payloads -----------------------------------------------------------------------------


@attrs.frozen
class Bad:
    """An invalid payload, the key it must be refused for, and a piece of the message."""

    rule: str
    event: str
    data: Any
    field: str
    message: str

    @property
    def id(self) -> str:
        return f"{self.event}:{self.rule}:{self.field}"


def _with(event: str, key: str, value: Any) -> dict[str, Any]:
    return {**FULL[event], key: value}


def _bad_values(event: str, key: str, value: Any) -> Iterator[tuple[str, Any, str, str]]:
    """(rule, bad value, field, message) for the key ``key`` whose good value is ``value``."""
    yield "null", None, key, "must be one of" if (event, key) in ENUMS else ", not null"
    if (event, key) in ENUMS:
        allowed = ", ".join(repr(v) for v in ENUMS[event, key])
        yield "enum", "bogus", key, f"must be one of {allowed}"
        yield "enum-case", value.upper(), key, "must be one of"
        yield "type", 1, key, "must be one of"
    elif isinstance(value, str):
        yield "type", 42, key, "not an integer"
        yield "type", [value], key, "not an array"
        if is_timestamp_key(key):
            yield "format", "2024-05-01 12:00", key, "ISO-8601 date-time"
            yield "format", "2024-05-01T12:00:00", key, "with a time zone"
        elif (event, key) not in TEXT_MAY_BE_EMPTY:
            yield "empty", "", key, "must not be empty"
    elif isinstance(value, bool):
        raise AssertionError("no boolean fields")
    elif isinstance(value, int | float):
        kind = "an integer" if isinstance(value, int) else "a number"
        yield "bool-as-number", True, key, f"must be {kind}, not a boolean"
        yield "bool-as-number", False, key, "not a boolean"
        yield "type", str(value), key, f"must be {kind}, not a string"
        low = 1 if key in AT_LEAST_ONE else 0
        yield "range", low - 1, key, f"must be {'between 0 and 100' if key in PERCENT_KEYS else ''}"
        yield "range", low - 0.5, key, "must be"
        if key in PERCENT_KEYS:
            yield "range", 100.5, key, "must be between 0 and 100"
        if isinstance(value, int):
            yield "integer", value + 0.5, key, "must be an integer, not a fractional number"
    elif isinstance(value, list):
        yield "type", "img-1", key, "must be an array, not a string"
        yield "item", ["img-1", ""], f"{key}[1]", "must not be empty"
        yield "item", [7], f"{key}[0]", "must be a string, not an integer"
    elif isinstance(value, dict):
        yield "type", "x", key, "must be an object, not a string"
        yield "type", [value], key, "must be an object, not an array"


def bad_inputs() -> Iterator[Bad]:
    for event, full in FULL.items():
        required, _ = WIRE_KEYS[event]
        for key in required:
            data = {k: v for k, v in full.items() if k != key}
            yield Bad("missing", event, data, key, "is required")
        yield Bad("unknown", event, {**full, "imageID": "x"}, "imageID", "unknown field")
        yield Bad("unknown", event, {**full, "": 1}, "", "unknown field")
        for key, value in full.items():
            for rule, bad, field, message in _bad_values(event, key, value):
                if rule == "null" and key not in required:
                    continue  # null is the same as absent
                yield Bad(rule, event, _with(event, key, bad), field, message)
        not_objects: tuple[Any, ...] = (None, [], "x", 1)
        for not_an_object in not_objects:
            yield Bad("payload", event, not_an_object, "", "must be an object")


BAD_INPUTS = list(bad_inputs())


def edge(event: str, key: str, value: Any, field: str, message: str) -> Bad:
    return Bad("edge", event, _with(event, key, value), field, message)


SHARED = "project-shared"
SYSTEM = "system-message"

# Cases the rules above do not make: nested objects, free-form data, edge values.
MORE_BAD = [
    edge(SHARED, "sharedWith", {}, "sharedWith.email", "is required"),
    edge(SHARED, "sharedWith", {"email": ""}, "sharedWith.email", "must not be empty"),
    edge(SHARED, "sharedWith", {"email": "a@b", "id": 1}, "sharedWith.id", "unknown field"),
    edge(SHARED, "sharedWith", {"email": "a@b", "userId": 3}, "sharedWith.userId", "a string"),
    edge("notification", "data", [1], "data", "must be an object, not an array"),
    edge("parallel-processing-status", "maxWorkers", 0, "maxWorkers", "must be at least 1"),
    edge("thumbnail-update", "width", 0, "width", "must be at least 1"),
    edge("queue-stats-update", "queued", 0.5, "queued", "not a fractional number"),
    *(
        edge(SYSTEM, "expiresAt", stamp, "expiresAt", "ISO-8601")
        for stamp in [
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T23:59:60Z",
            "2024-05-01t12:00:00z",
            "2024-05-01T12:00:00.Z",
            TS + "\n",
            " " + TS,
            "2024-05-01",
            "1714564800000",
            "\uff12\uff10\uff12\uff14-05-01T12:00:00Z",  # full-width digits
        ]
    ),
]

# The one rule JSON Schema cannot state: the day must exist.
ONLY_PYTHON_REFUSES = [
    edge(SYSTEM, "expiresAt", "2023-02-29T00:00:00Z", "expiresAt", "ISO-8601"),
    edge("upload-failed", "timestamp", "2024-04-31T00:00:00Z", "timestamp", "ISO-8601"),
]

# Values json.loads makes that JSON has no words for.
NOT_JSON = [
    edge("segmentation-update", "progress", float("nan"), "progress", "a finite number"),
    edge("batch-completed", "processingTime", float("inf"), "processingTime", "a finite number"),
    edge("project-card-counts", "imageCount", float("-inf"), "imageCount", "must be an integer"),
    edge("notification", "data", {"items": [1, float("nan")]}, "data.items[1]", "a finite number"),
]

ALL_BAD = BAD_INPUTS + MORE_BAD + ONLY_PYTHON_REFUSES + NOT_JSON


def test_every_rule_is_tried_on_every_event() -> None:
    rules = {(bad.event, bad.rule) for bad in BAD_INPUTS}
    for event in EVENTS:
        for rule in ("missing", "unknown", "type", "null", "payload"):
            assert (event, rule) in rules
    assert {bad.rule for bad in BAD_INPUTS} >= {
        "empty",
        "enum",
        "bool-as-number",
        "range",
        "integer",
        "format",
        "item",
    }


@pytest.mark.parametrize("bad", ALL_BAD, ids=lambda bad: bad.id)
def test_an_invalid_payload_is_refused_naming_the_field(bad: Bad) -> None:
    with pytest.raises(EventValidationError) as caught:
        validate_event(bad.event, bad.data)
    error = caught.value
    assert (error.event, error.field) == (bad.event, bad.field)
    assert bad.message in error.message
    where = f"{bad.event}.{bad.field}" if bad.field else bad.event
    assert str(error) == f"{where}: {error.message}"
    assert isinstance(error, ValueError)


def test_error_messages() -> None:
    cases: list[tuple[str, Any, str]] = [
        (
            "segmentation-update",
            {**FULL["segmentation-update"], "progress": 101},
            "segmentation-update.progress: must be between 0 and 100",
        ),
        (
            "segmentation-update",
            {**FULL["segmentation-update"], "status": "done"},
            "segmentation-update.status: must be one of 'queued', 'processing', 'segmented', "
            "'failed', 'no_segmentation'",
        ),
        (
            "segmentation-update",
            {**FULL["segmentation-update"], "polygonCount": True},
            "segmentation-update.polygonCount: must be an integer, not a boolean",
        ),
        (
            "queue-stats-update",
            {**FULL["queue-stats-update"], "queued": -1},
            "queue-stats-update.queued: must be at least 0",
        ),
        ("project-deleted", {"deletedAt": TS}, "project-deleted.projectId: is required"),
        ("project-deleted", [], "project-deleted: must be an object, not an array"),
    ]
    for event, data, text in cases:
        with pytest.raises(EventValidationError) as caught:
            validate_event(event, data)
        assert str(caught.value) == text


def test_unknown_keys_are_named_before_missing_ones() -> None:
    with pytest.raises(EventValidationError) as caught:
        validate_event("project-deleted", {"projectID": "prj-1", "deletedAt": TS})
    assert caught.value.field == "projectID"


# -- Python construction --------------------------------------------------------------------------

GOOD_UPDATE: dict[str, Any] = {"image_id": "i", "project_id": "p", "status": "queued"}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"status": "bogus"}, "status", "must be a SegmentationStatus: one of 'queued'"),
        ({"status": "queued"}, "status", "must be a SegmentationStatus"),
        ({"image_id": ""}, "imageId", "must not be empty"),
        ({"image_id": None}, "imageId", "must be a string, not null"),
        ({"progress": 101}, "progress", "must be between 0 and 100"),
        ({"progress": True}, "progress", "not a boolean"),
        ({"progress": float("nan")}, "progress", "must be a finite number"),
        ({"polygon_count": 2.0}, "polygonCount", "must be an integer"),
        ({"polygon_count": -1}, "polygonCount", "must be at least 0"),
    ],
)
def test_building_a_payload_checks_it(changes: dict[str, Any], field: str, message: str) -> None:
    kwargs = {**GOOD_UPDATE, "status": SegmentationStatus.QUEUED, **changes}
    with pytest.raises(EventValidationError) as caught:
        SegmentationUpdate(**kwargs)
    assert (caught.value.event, caught.value.field) == ("segmentation-update", field)
    assert message in caught.value.message


def test_building_nested_and_list_values_checks_them() -> None:
    with pytest.raises(EventValidationError) as caught:
        ShareRecipient(email="")
    assert str(caught.value) == "ShareRecipient.email: must not be empty"
    with pytest.raises(EventValidationError) as caught:
        BatchStarted(
            batch_id="b",
            project_id="p",
            image_count=1,
            started_at=TS,
            image_ids=["i"],  # type: ignore[arg-type]
        )
    assert caught.value.field == "imageIds"
    assert "must be a tuple" in caught.value.message
    kwargs: dict[str, Any] = {"shared_with": {"email": "a@b"}}
    with pytest.raises(EventValidationError) as caught:
        ProjectShared(
            project_id="p", shared_by="u", permission=SharePermission.EDIT, shared_at=TS, **kwargs
        )
    assert caught.value.field == "sharedWith"
    assert "must be a ShareRecipient" in caught.value.message
    with pytest.raises(EventValidationError) as caught:
        Notification(
            id="n",
            type=NotificationType.INFO,
            title="t",
            message="m",
            created_at=TS,
            data={"items": [1, 2, {3}]},
        )
    assert caught.value.field == "data.items[2]"


def test_payloads_are_frozen_hashable_and_evolve_checked() -> None:
    update = SegmentationUpdate(image_id="i", project_id="p", status=SegmentationStatus.QUEUED)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        update.progress = 5  # type: ignore[misc]
    assert not hasattr(update, "__dict__")
    with pytest.raises(EventValidationError):
        attrs.evolve(update, progress=-1)
    moved = attrs.evolve(update, status=SegmentationStatus.SEGMENTED, polygon_count=3)
    assert to_wire(moved) == {
        "imageId": "i",
        "projectId": "p",
        "status": "segmented",
        "polygonCount": 3,
    }
    note = parse_event("notification", FULL["notification"])
    assert isinstance(note, Notification)
    assert hash(note) == hash(attrs.evolve(note, data={"other": 1}))
    assert note != attrs.evolve(note, data={"other": 1})


def test_event_name_and_to_wire_refuse_what_is_not_an_event() -> None:
    with pytest.raises(TypeError):
        event_name(ShareRecipient(email="a@b"))
    with pytest.raises(TypeError):
        event_name(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_wire({"imageId": "i"})  # type: ignore[arg-type]
    assert to_wire(ShareRecipient(email="a@b")) == {"email": "a@b"}


def test_payload_classes_must_be_typed_described_and_defaulted() -> None:
    @attrs.frozen(kw_only=True)
    class PlainInt(Payload):
        """Plain int has no range.

        Attributes:
            n: a number.
        """

        n: int

    @attrs.frozen(kw_only=True)
    class Undescribed(Payload):
        """No Attributes section."""

        n: Count

    @attrs.frozen(kw_only=True)
    class OptionalWithoutDefault(Payload):
        """Optional but required.

        Attributes:
            n: a number.
        """

        n: Count | None

    @attrs.frozen(kw_only=True)
    class DefaultNotNone(Payload):
        """Required with a default.

        Attributes:
            n: a number.
        """

        n: Count = 3

    for cls, message in [
        (PlainInt, "not a payload field type"),
        (Undescribed, "not described"),
        (OptionalWithoutDefault, "default to None"),
        (DefaultNotNone, "default to None"),
    ]:
        with pytest.raises(TypeError, match=message):
            fields_of(cls)


# -- JSON Schema ----------------------------------------------------------------------------------

_KEYWORDS = {
    "$schema",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "enum",
    "anyOf",
    "minimum",
    "maximum",
    "minLength",
    "pattern",
    "format",
    "properties",
    "required",
    "additionalProperties",
    "items",
}
_TYPES = {
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def schema_errors(
    schema: Mapping[str, Any], value: Any, root: Mapping[str, Any], path: str = ""
) -> list[str]:
    """Where ``value`` breaks ``schema``: the draft 2020-12 keywords the export uses, no more.

    ``format`` is an annotation only (the 2020-12 default); ``pattern`` is an ECMA-262 regex,
    whose ``$`` matches only at the very end.
    """
    assert set(schema) <= _KEYWORDS, f"unknown keywords {set(schema) - _KEYWORDS}"
    errors: list[str] = []
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        errors += schema_errors(root["$defs"][name], value, root, path)
    if "anyOf" in schema:
        branches = [schema_errors(branch, value, root, path) for branch in schema["anyOf"]]
        if all(branches):
            errors += [f"{path}: anyOf", *(e for branch in branches for e in branch)]
    if "type" in schema and not _TYPES[schema["type"]](value):
        return [*errors, f"{path}: type"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: enum")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: minimum")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: maximum")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: minLength")
    if "pattern" in schema and not re.search(schema["pattern"].replace("$", r"\Z"), value):
        errors.append(f"{path}: pattern")
    for key in schema.get("required", ()):
        if key not in value:
            errors.append(f"{path}.{key}: required")
    properties = schema.get("properties", {})
    if isinstance(value, dict):
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(properties[key], item, root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: additionalProperties")
    if "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(schema["items"], item, root, f"{path}[{index}]")
    return errors


SCHEMA = json_schema()


def event_schema_errors(event: str, data: Any) -> list[str]:
    return schema_errors(SCHEMA["properties"][event], data, SCHEMA)


def test_the_schema_document() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["type"] == "object"
    assert SCHEMA["additionalProperties"] is False
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA
    assert list(SCHEMA["properties"]) == list(EVENTS)
    for event, cls in EVENTS.items():
        assert SCHEMA["properties"][event] == {"$ref": f"#/$defs/{cls.__name__}"}
        definition = SCHEMA["$defs"][cls.__name__]
        required, optional = WIRE_KEYS[event]
        assert list(definition["properties"]) == [*required, *optional]
        assert definition["required"] == list(required)
        assert definition["additionalProperties"] is False
        assert definition["description"]
        for key in optional:
            assert definition["properties"][key]["anyOf"][1] == {"type": "null"}
        for key, prop in definition["properties"].items():
            assert prop["description"][0].isupper(), (event, key)
    for (event, key), values in ENUMS.items():
        ref = SCHEMA["$defs"][EVENTS[event].__name__]["properties"][key]["$ref"]
        assert SCHEMA["$defs"][ref.removeprefix("#/$defs/")]["enum"] == list(values)
    progress = SCHEMA["$defs"]["SegmentationUpdate"]["properties"]["progress"]["anyOf"][0]
    assert progress == {"type": "number", "minimum": 0, "maximum": 100}
    assert SCHEMA["$defs"]["ShareRecipient"]["required"] == ["email"]


def test_the_enums_in_the_schema_are_the_python_enums() -> None:
    for enum_type in (
        SegmentationStatus,
        UploadFileStatus,
        SharePermission,
        NotificationType,
        SystemMessageLevel,
    ):
        assert SCHEMA["$defs"][enum_type.__name__]["enum"] == [m.value for m in enum_type]


@pytest.mark.parametrize("event", list(EVENTS))
def test_the_schema_takes_the_valid_examples(event: str) -> None:
    assert event_schema_errors(event, FULL[event]) == []
    assert event_schema_errors(event, minimal(event)) == []
    assert (
        event_schema_errors(event, {**minimal(event), **dict.fromkeys(WIRE_KEYS[event][1])}) == []
    )
    assert schema_errors(SCHEMA, {event: FULL[event]}, SCHEMA) == []


@pytest.mark.parametrize("bad", BAD_INPUTS + MORE_BAD, ids=lambda bad: bad.id)
def test_the_schema_refuses_the_invalid_ones(bad: Bad) -> None:
    errors = event_schema_errors(bad.event, bad.data)
    assert errors
    assert any(
        e.startswith(f".{bad.field}:") or e.startswith(f".{bad.field}.") for e in errors
    ) or (bad.field == "" and errors == [": type"])


def test_the_schema_cannot_tell_a_day_that_does_not_exist() -> None:
    for bad in ONLY_PYTHON_REFUSES:
        assert event_schema_errors(bad.event, bad.data) == []


_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 200),
    st.floats(-2, 150, allow_nan=False),
    st.sampled_from(["", "x", "queued", "info", "view", "critical", TS, "2024-05-01", "1e3"]),
    st.lists(st.sampled_from(["", "img-1", 3, None]), max_size=3),
    st.dictionaries(
        st.sampled_from(["email", "userId", "x"]), st.sampled_from(["a@b", "", 1]), max_size=3
    ),
)
_DROP = object()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_schema_and_the_python_check_agree(data: st.DataObject) -> None:
    event = data.draw(st.sampled_from(list(EVENTS)))
    payload = dict(FULL[event])
    keys = st.sampled_from([*FULL[event], "extra"])
    for key, value in data.draw(
        st.lists(st.tuples(keys, st.one_of(st.just(_DROP), _JSON_VALUES)), max_size=3)
    ):
        if value is _DROP:
            payload.pop(key, None)
        else:
            payload[key] = value
    error: EventValidationError | None = None
    try:
        wire = validate_event(event, payload)
    except EventValidationError as exc:
        error = exc
    errors = event_schema_errors(event, payload)
    if error is None:
        assert errors == []
        assert validate_event(event, wire) == wire
        assert event_schema_errors(event, wire) == []
    else:
        assert any(e.startswith(f".{error.field}") for e in errors), (error, errors)


# -- TypeScript -----------------------------------------------------------------------------------

TS_TEXT = typescript()


def ts_interfaces(text: str) -> dict[str, dict[str, tuple[bool, str]]]:
    """Each interface's fields: name -> (optional, TypeScript type)."""
    found: dict[str, dict[str, tuple[bool, str]]] = {}
    for match in re.finditer(r"^export interface (\w+) \{\n(.*?)^\}$", text, re.S | re.M):
        fields: dict[str, tuple[bool, str]] = {}
        for line in match[2].splitlines():
            if line.strip().startswith("/**"):
                assert line.strip().endswith("*/")
                continue
            field = re.fullmatch(r'  ("[\w-]+"|\w+)(\??): (.+);', line)
            assert field, line
            fields[field[1].strip('"')] = (field[2] == "?", field[3])
        found[match[1]] = fields
    return found


def ts_aliases(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export type (\w+) = (.+);$", text, re.M))


def expected_ts_type(prop: Mapping[str, Any]) -> str:
    """The TypeScript type of a schema property, worked out from the schema alone."""
    if "anyOf" in prop:
        return expected_ts_type(prop["anyOf"][0])
    if "$ref" in prop:
        return str(prop["$ref"].removeprefix("#/$defs/"))
    if prop["type"] == "array":
        return f"{expected_ts_type(prop['items'])}[]"
    return {
        "string": "IsoDateTime" if prop.get("format") == "date-time" else "string",
        "integer": "number",
        "number": "number",
        "object": "Record<string, unknown>",
    }[prop["type"]]


def test_typescript_maps_every_event_to_its_payload_interface() -> None:
    listeners = ts_interfaces(TS_TEXT)["ServerToClientEvents"]
    assert list(listeners) == list(EVENTS)
    for event, cls in EVENTS.items():
        assert listeners[event] == (False, f"(payload: {cls.__name__}) => void")
    assert '  "segmentation-update": (payload: SegmentationUpdate) => void;' in TS_TEXT
    assert "export type ServerEventName = keyof ServerToClientEvents;" in TS_TEXT


def test_typescript_interfaces_have_every_field_with_its_type() -> None:
    interfaces = ts_interfaces(TS_TEXT)
    for event, cls in EVENTS.items():
        fields = interfaces[cls.__name__]
        required, optional = WIRE_KEYS[event]
        assert list(fields) == [*required, *optional]
        for key, (is_optional, ts_type) in fields.items():
            assert is_optional == (key in optional), (event, key)
            prop = SCHEMA["$defs"][cls.__name__]["properties"][key]
            assert ts_type == expected_ts_type(prop), (event, key)
    assert interfaces["ShareRecipient"] == {"email": (False, "string"), "userId": (True, "string")}


def test_typescript_enums_are_string_literal_unions() -> None:
    aliases = ts_aliases(TS_TEXT)
    assert aliases["IsoDateTime"] == "string"
    for enum_type in (
        SegmentationStatus,
        UploadFileStatus,
        SharePermission,
        NotificationType,
        SystemMessageLevel,
    ):
        assert aliases[enum_type.__name__] == " | ".join(f'"{m.value}"' for m in enum_type)
    assert (
        'export type SegmentationStatus = "queued" | "processing" | "segmented" | "failed"'
        ' | "no_segmentation";' in TS_TEXT
    )


def test_typescript_literal_lines() -> None:
    for line in [
        "  imageId: string;",
        "  status: SegmentationStatus;",
        "  progress?: number;",
        "  sharedWith: ShareRecipient;",
        "  imageIds?: string[];",
        "  data?: Record<string, unknown>;",
        "  createdAt: IsoDateTime;",
        "  currentFileStatus: UploadFileStatus;",
    ]:
        assert line + "\n" in TS_TEXT, line


def test_typescript_is_well_formed() -> None:
    assert TS_TEXT.count("{") == TS_TEXT.count("}")
    assert TS_TEXT.count("/**") == TS_TEXT.count("*/")
    declared = re.findall(r"^export (?:interface|type) (\w+)", TS_TEXT, re.M)
    assert len(declared) == len(set(declared))
    used = set(re.findall(r"\b[A-Z]\w+\b", "".join(re.findall(r": (.+);", TS_TEXT))))
    assert used - {"Record"} <= set(declared)
    for line in TS_TEXT.splitlines():
        assert not line or line.startswith(("//", "/**", "export ", "  ", "}")), line


def test_public_names() -> None:
    assert sorted(events.__all__) == sorted(
        [
            "EVENTS",
            *(cls.__name__ for cls in EVENTS.values()),
            "EventValidationError",
            "NotificationType",
            "Payload",
            "SegmentationStatus",
            "SharePermission",
            "ShareRecipient",
            "SystemMessageLevel",
            "UploadFileStatus",
            "event_name",
            "json_schema",
            "parse_event",
            "to_wire",
            "typescript",
            "validate_event",
        ]
    )
