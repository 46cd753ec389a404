"""The event catalogue: one typed payload class per event the platform sends to browsers.

Each class is frozen and slotted, checks its fields when built, and names its wire event in
``EVENT``; :data:`EVENTS` maps every wire event name to its class. The field types, and the
rules that the check, the JSON Schema and the TypeScript declarations share, are in
:mod:`hub.app.events_schema`. Conventions:

- identifiers are non-empty strings; counts are integers >= 0;
- percentages are numbers from 0 to 100; durations are numbers of milliseconds;
- timestamps are RFC 3339 strings, as ``Date.prototype.toISOString()`` writes them; a field
  named ``timestamp`` is when a status was taken, one named ``...At`` when something happened.

The catalogue is exported for the front end by ``hub schema --format {json,typescript}``
(:func:`json_schema`, :func:`typescript`)::

    import type { ServerToClientEvents } from "./events";
    const socket: Socket<ServerToClientEvents> = io(url);
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from hub.app.events_schema import (
    Count,
    EventValidationError,
    Id,
    Millis,
    NonEmpty,
    Payload,
    Percent,
    PositiveInt,
    Timestamp,
    json_schema_document,
    read,
    typescript_document,
    write,
)

__all__ = [
    "EVENTS",
    "BatchCompleted",
    "BatchStarted",
    "DashboardMetrics",
    "EventValidationError",
    "Notification",
    "NotificationType",
    "ParallelProcessingStatus",
    "Payload",
    "ProjectCardCounts",
    "ProjectDeleted",
    "ProjectShared",
    "ProjectUnshared",
    "ProjectUpdated",
    "QueueStatsUpdate",
    "SegmentationStatus",
    "SegmentationUpdate",
    "SharePermission",
    "ShareRecipient",
    "SystemMessage",
    "SystemMessageLevel",
    "ThumbnailUpdate",
    "UploadCompleted",
    "UploadFailed",
    "UploadFileStatus",
    "UploadProgress",
    "event_name",
    "json_schema",
    "parse_event",
    "to_wire",
    "typescript",
    "validate_event",
]


class SegmentationStatus(enum.StrEnum):
    """Where an image is in segmentation."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SEGMENTED = "segmented"
    FAILED = "failed"
    NO_SEGMENTATION = "no_segmentation"


class UploadFileStatus(enum.StrEnum):
    """Where the file being uploaded is."""

    UPLOADING = "uploading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class SharePermission(enum.StrEnum):
    """What a user a project is shared with may do with it."""

    VIEW = "view"
    EDIT = "edit"


class NotificationType(enum.StrEnum):
    """How a notification is shown."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


class SystemMessageLevel(enum.StrEnum):
    """How urgent a system message is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# -- segmentation ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SegmentationUpdate(Payload):
    """An image's segmentation moved on.

    Attributes:
        image_id: the image.
        project_id: the project the image belongs to.
        status: where the image now is.
        queue_id: the queue entry of the job, while it has one.
        error: why segmentation failed (with status failed).
        progress: how far the job is, in percent.
        polygon_count: how many polygons segmentation found (with status segmented).
        processing_time: how long segmentation took, in milliseconds.
    """

    EVENT = "segmentation-update"
    image_id: Id
    project_id: Id
    status: SegmentationStatus
    queue_id: Id | None = None
    error: NonEmpty | None = None
    progress: Percent | None = None
    polygon_count: Count | None = None
    processing_time: Millis | None = None


@attrs.frozen(kw_only=True)
class QueueStatsUpdate(Payload):
    """The segmentation queue of a project, counted.

    Attributes:
        project_id: the project.
        queued: images waiting for a worker.
        processing: images being segmented.
        completed: images segmented.
        failed: images whose segmentation failed.
        total: all images of the project that went through the queue.
        user_id: the user the counts are for, when they are per user.
        queue_position: where the user's first waiting image is in the queue (0 is next).
        estimated_time: how long until the user's images are done, in milliseconds.
    """

    EVENT = "queue-stats-update"
    project_id: Id
    queued: Count
    processing: Count
    completed: Count
    failed: Count
    total: Count
    user_id: Id | None = None
    queue_position: Count | None = None
    estimated_time: Millis | None = None


@attrs.frozen(kw_only=True)
class ParallelProcessingStatus(Payload):
    """How busy the segmentation workers are.

    Attributes:
        active_workers: workers segmenting now.
        max_workers: how many workers may run at once.
        queue_length: images waiting for a worker, over all projects.
        processing_images: images being segmented, over all projects.
        timestamp: when the status was taken.
        average_processing_time: mean time to segment one image lately, in milliseconds.
    """

    EVENT = "parallel-processing-status"
    active_workers: Count
    max_workers: PositiveInt
    queue_length: Count
    processing_images: Count
    timestamp: Timestamp
    average_processing_time: Millis | None = None


@attrs.frozen(kw_only=True)
class BatchStarted(Payload):
    """A batch of segmentation jobs started.

    Attributes:
        batch_id: the batch.
        project_id: the project its images belong to.
        image_count: how many images it segments.
        started_at: when it started.
        image_ids: the images it segments.
        model: the segmentation model it uses.
    """

    EVENT = "batch-started"
    batch_id: Id
    project_id: Id
    image_count: Count
    started_at: Timestamp
    image_ids: tuple[Id, ...] | None = None
    model: NonEmpty | None = None


@attrs.frozen(kw_only=True)
class BatchCompleted(Payload):
    """A batch of segmentation jobs finished.

    Attributes:
        batch_id: the batch.
        project_id: the project its images belong to.
        image_count: how many images it segmented.
        segmented_count: images segmented.
        failed_count: images whose segmentation failed.
        completed_at: when it finished.
        processing_time: how long the batch took, in milliseconds.
    """

    EVENT = "batch-completed"
    batch_id: Id
    project_id: Id
    image_count: Count
    segmented_count: Count
    failed_count: Count
    completed_at: Timestamp
    processing_time: Millis | None = None


@attrs.frozen(kw_only=True)
class ThumbnailUpdate(Payload):
    """An image has a new thumbnail (with its segmentation drawn on it).

    Attributes:
        project_id: the project the image belongs to.
        image_id: the image.
        thumbnail_url: where to fetch the thumbnail.
        polygon_count: how many polygons the thumbnail shows.
        width: the thumbnail's width in pixels.
        height: the thumbnail's height in pixels.
    """

    EVENT = "thumbnail-update"
    project_id: Id
    image_id: Id
    thumbnail_url: NonEmpty
    polygon_count: Count | None = None
    width: PositiveInt | None = None
    height: PositiveInt | None = None


# -- uploads -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class UploadProgress(Payload):
    """An upload batch moved on.

    Attributes:
        project_id: the project the files go to.
        batch_id: the upload batch.
        filename: the file being uploaded.
        file_size: its size in bytes.
        progress: how much of it is uploaded, in percent.
        current_file_status: where it is.
        files_completed: files of the batch done.
        files_total: files in the batch.
        percent_complete: how much of the batch is done, in percent.
        timestamp: when the progress was measured.
    """

    EVENT = "upload-progress"
    project_id: Id
    batch_id: Id
    filename: NonEmpty
    file_size: Count
    progress: Percent
    current_file_status: UploadFileStatus
    files_completed: Count
    files_total: Count
    percent_complete: Percent
    timestamp: Timestamp


@attrs.frozen(kw_only=True)
class UploadCompleted(Payload):
    """An upload batch finished (some of its files may have failed).

    Attributes:
        project_id: the project the files went to.
        batch_id: the upload batch.
        files_uploaded: files uploaded.
        files_failed: files that failed.
        timestamp: when the batch finished.
        image_ids: the images the uploaded files became.
        total_bytes: the size of the uploaded files, in bytes.
    """

    EVENT = "upload-completed"
    project_id: Id
    batch_id: Id
    files_uploaded: Count
    files_failed: Count
    timestamp: Timestamp
    image_ids: tuple[Id, ...] | None = None
    total_bytes: Count | None = None


@attrs.frozen(kw_only=True)
class UploadFailed(Payload):
    """A file of an upload batch failed.

    Attributes:
        project_id: the project the file was going to.
        batch_id: the upload batch.
        filename: the file.
        error: why it failed.
        timestamp: when it failed.
    """

    EVENT = "upload-failed"
    project_id: Id
    batch_id: Id
    filename: NonEmpty
    error: NonEmpty
    timestamp: Timestamp


# -- projects ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProjectUpdated(Payload):
    """A project changed; the optional fields that are present hold the new values.

    Attributes:
        project_id: the project.
        updated_at: when it changed.
        title: its title.
        description: its description.
        image_count: how many images it holds.
        thumbnail_url: where to fetch its cover thumbnail.
    """

    EVENT = "project-updated"
    project_id: Id
    updated_at: Timestamp
    title: NonEmpty | None = None
    description: str | None = None
    image_count: Count | None = None
    thumbnail_url: NonEmpty | None = None


@attrs.frozen(kw_only=True)
class ProjectDeleted(Payload):
    """A project was deleted.

    Attributes:
        project_id: the project.
        deleted_at: when it was deleted.
        deleted_by: the user who deleted it.
    """

    EVENT = "project-deleted"
    project_id: Id
    deleted_at: Timestamp
    deleted_by: Id | None = None


@attrs.frozen(kw_only=True)
class ShareRecipient(Payload):
    """Who a project is shared with.

    Attributes:
        email: the address the share was sent to.
        user_id: the user with that address, when there is one yet.
    """

    email: NonEmpty
    user_id: Id | None = None


@attrs.frozen(kw_only=True)
class ProjectShared(Payload):
    """A project was shared with someone.

    Attributes:
        project_id: the project.
        shared_by: the user who shared it.
        shared_with: who it is shared with.
        permission: what they may do with it.
        shared_at: when it was shared.
    """

    EVENT = "project-shared"
    project_id: Id
    shared_by: Id
    shared_with: ShareRecipient
    permission: SharePermission
    shared_at: Timestamp


@attrs.frozen(kw_only=True)
class ProjectUnshared(Payload):
    """Someone lost access to a shared project.

    Attributes:
        project_id: the project.
        user_id: the user who lost access.
        unshared_at: when.
        unshared_by: the user who took the access away (the user themself, when they left).
    """

    EVENT = "project-unshared"
    project_id: Id
    user_id: Id
    unshared_at: Timestamp
    unshared_by: Id | None = None


@attrs.frozen(kw_only=True)
class ProjectCardCounts(Payload):
    """The counts shown on a project's card.

    Attributes:
        project_id: the project.
        image_count: its images.
        segmented_count: its images segmented.
        processing_count: its images queued or being segmented.
        failed_count: its images whose segmentation failed.
    """

    EVENT = "project-card-counts"
    project_id: Id
    image_count: Count
    segmented_count: Count
    processing_count: Count
    failed_count: Count


@attrs.frozen(kw_only=True)
class DashboardMetrics(Payload):
    """The numbers on a user's dashboard.

    Attributes:
        total_projects: projects the user owns or has been shared.
        total_images: images in those projects.
        segmented_images: of those, segmented.
        processing_images: of those, being segmented.
        queued_images: of those, waiting for a worker.
        failed_images: of those, whose segmentation failed.
        storage_used_bytes: storage the user's images take, in bytes.
        timestamp: when the numbers were taken.
        storage_limit_bytes: the user's storage quota, in bytes.
        average_processing_time: mean time to segment one of the user's images, in
            milliseconds.
    """

    EVENT = "dashboard-metrics"
    total_projects: Count
    total_images: Count
    segmented_images: Count
    processing_images: Count
    queued_images: Count
    failed_images: Count
    storage_used_bytes: Count
    timestamp: Timestamp
    storage_limit_bytes: Count | None = None
    average_processing_time: Millis | None = None


# -- messages ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Notification(Payload):
    """A notification for one user.

    Attributes:
        id: the notification, to mark it read.
        type: how it is shown.
        title: its title.
        message: its text.
        created_at: when it was made.
        link: where clicking it leads (a URL or an app path).
        data: anything else the front end needs to act on it.
    """

    EVENT = "notification"
    id: Id
    type: NotificationType
    title: NonEmpty
    message: NonEmpty
    created_at: Timestamp
    link: NonEmpty | None = None
    # A dict is not hashable: leave it out of the hash (it still takes part in ==).
    data: dict[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(kw_only=True)
class SystemMessage(Payload):
    """A message from the operators to everyone (maintenance, outages).

    Attributes:
        message: its text.
        level: how urgent it is.
        expires_at: when to stop showing it.
    """

    EVENT = "system-message"
    message: NonEmpty
    level: SystemMessageLevel
    expires_at: Timestamp | None = None


_CATALOGUE: tuple[type[Payload], ...] = (
    SegmentationUpdate,
    QueueStatsUpdate,
    UploadProgress,
    UploadCompleted,
    UploadFailed,
    ThumbnailUpdate,
    ParallelProcessingStatus,
    ProjectUpdated,
    ProjectDeleted,
    ProjectShared,
    ProjectUnshared,
    ProjectCardCounts,
    DashboardMetrics,
    Notification,
    SystemMessage,
    BatchStarted,
    BatchCompleted,
)

EVENTS: Mapping[str, type[Payload]] = MappingProxyType({cls.EVENT: cls for cls in _CATALOGUE})
"""Every event of the catalogue: wire event name to payload class."""


def parse_event(event: str, data: Any) -> Payload:
    """The payload of ``event`` that the wire object ``data`` (decoded JSON) holds.

    Returns:
        An instance of ``EVENTS[event]``.

    Raises:
        KeyError: ``event`` is not in the catalogue.
        EventValidationError: ``data`` is not a valid payload of ``event``; its ``field``
            names the offending key (camelCase, e.g. ``"progress"`` or ``"sharedWith.email"``).
    """
    return read(EVENTS[event], data)


def to_wire(payload: Payload) -> dict[str, Any]:
    """The wire object of ``payload``: camelCase keys, optional fields that are None left out.

    Raises:
        TypeError: ``payload`` is not a payload class instance.
    """
    return write(payload)


def event_name(payload: Payload) -> str:
    """The wire event name ``payload`` is sent as.

    Raises:
        TypeError: ``payload`` is not an event payload (a nested class such as
            :class:`ShareRecipient` is not sent on its own).
    """
    cls = type(payload)
    if EVENTS.get(getattr(cls, "EVENT", "")) is not cls:
        raise TypeError(f"not an event payload: {payload!r}")
    return cls.EVENT


def validate_event(event: str, data: Any) -> dict[str, Any]:
    """``data`` checked against ``event``'s payload class, and normalised.

    Normalised means: optional keys that were null left out, enum and other values as the
    payload class writes them, and a fresh object (``data`` itself is not changed or kept).

    Raises:
        KeyError: ``event`` is not in the catalogue.
        EventValidationError: as :func:`parse_event`.
    """
    return to_wire(parse_event(event, data))


def json_schema() -> dict[str, Any]:
    """The catalogue as one JSON Schema (draft 2020-12) document.

    ``$defs`` holds a schema per payload class and enum; the document's ``properties`` map
    each event name to a ``$ref`` of its payload's schema.
    """
    return json_schema_document(EVENTS, title="Events the hub server sends")


_HEADER = """\
The events the hub Socket.IO server sends, and their payloads.
Generated by `hub schema --format typescript` from hub/app/events.py: do not edit."""


def typescript() -> str:
    """The catalogue as TypeScript declarations.

    One interface per payload class, a string-literal union per enum, and
    ``ServerToClientEvents`` for socket.io-client's ``Socket<ServerToClientEvents>``.
    """
    return typescript_document(EVENTS, header=_HEADER)
