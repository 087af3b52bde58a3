import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "customer_id", "product_type", "blob_uri", "options", "status", "rows_total", "rows_valid", "rows_invalid", "rows_inserted", "error", "created_at", "started_at", "finished_at", "rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted", "undone_at", "chunks_done", "chunks_total", "source", "upload")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BLOB_URI_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_VALID_FIELD_NUMBER: _ClassVar[int]
    ROWS_INVALID_FIELD_NUMBER: _ClassVar[int]
    ROWS_INSERTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_UPDATED_FIELD_NUMBER: _ClassVar[int]
    ROWS_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    ROWS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_DELETED_FIELD_NUMBER: _ClassVar[int]
    UNDONE_AT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    customer_id: str
    product_type: str
    blob_uri: str
    options: _struct_pb2.Struct
    status: str
    rows_total: int
    rows_valid: int
    rows_invalid: int
    rows_inserted: int
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    rows_updated: int
    rows_unchanged: int
    rows_duplicate: int
    rows_deleted: int
    undone_at: _timestamp_pb2.Timestamp
    chunks_done: int
    chunks_total: int
    source: Source
    upload: Upload
    def __init__(self, job_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., product_type: _Optional[str] = ..., blob_uri: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., status: _Optional[str] = ..., rows_total: _Optional[int] = ..., rows_valid: _Optional[int] = ..., rows_invalid: _Optional[int] = ..., rows_inserted: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows_updated: _Optional[int] = ..., rows_unchanged: _Optional[int] = ..., rows_duplicate: _Optional[int] = ..., rows_deleted: _Optional[int] = ..., undone_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunks_done: _Optional[int] = ..., chunks_total: _Optional[int] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., upload: _Optional[_Union[Upload, _Mapping]] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("id", "filename")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    filename: str
    def __init__(self, id: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("scheme", "compression", "format", "member")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    compression: str
    format: str
    member: str
    def __init__(self, scheme: _Optional[str] = ..., compression: _Optional[str] = ..., format: _Optional[str] = ..., member: _Optional[str] = ...) -> None: ...

class ListRejectsRequest(_message.Message):
    __slots__ = ("job_id", "after", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after: int
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("source_row", "record", "errors")
    SOURCE_ROW_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    source_row: int
    record: _struct_pb2.Struct
    errors: _containers.RepeatedCompositeFieldContainer[FieldError]
    def __init__(self, source_row: _Optional[int] = ..., record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., errors: _Optional[_Iterable[_Union[FieldError, _Mapping]]] = ...) -> None: ...

class FieldError(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetFeedRequest(_message.Message):
    __slots__ = ("feed_id",)
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    feed_id: str
    def __init__(self, feed_id: _Optional[str] = ...) -> None: ...

class ListFeedsRequest(_message.Message):
    __slots__ = ("customer_id", "limit")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    limit: int
    def __init__(self, customer_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListFeedsResponse(_message.Message):
    __slots__ = ("feeds",)
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    feeds: _containers.RepeatedCompositeFieldContainer[Feed]
    def __init__(self, feeds: _Optional[_Iterable[_Union[Feed, _Mapping]]] = ...) -> None: ...

class UpdateFeedRequest(_message.Message):
    __slots__ = ("feed_id", "changes")
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    feed_id: str
    changes: _struct_pb2.Struct
    def __init__(self, feed_id: _Optional[str] = ..., changes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RunFeedResponse(_message.Message):
    __slots__ = ("found", "enqueued", "error", "feed")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FEED_FIELD_NUMBER: _ClassVar[int]
    found: int
    enqueued: int
    error: str
    feed: Feed
    def __init__(self, found: _Optional[int] = ..., enqueued: _Optional[int] = ..., error: _Optional[str] = ..., feed: _Optional[_Union[Feed, _Mapping]] = ...) -> None: ...

class ListFeedFilesRequest(_message.Message):
    __slots__ = ("feed_id", "state", "limit", "after")
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    feed_id: str
    state: str
    limit: int
    after: str
    def __init__(self, feed_id: _Optional[str] = ..., state: _Optional[str] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListFeedFilesResponse(_message.Message):
    __slots__ = ("files", "next")
    FILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FeedFile]
    next: str
    def __init__(self, files: _Optional[_Iterable[_Union[FeedFile, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class RetryFeedFileRequest(_message.Message):
    __slots__ = ("feed_id", "version")
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    feed_id: str
    version: str
    def __init__(self, feed_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Feed(_message.Message):
    __slots__ = ("feed_id", "customer_id", "product_type", "prefix_uri", "pattern", "options", "schedule", "after_success", "expect_every_hours", "paused", "late", "next_run_at", "last_run", "last_new_file_at", "created_at", "updated_at", "files", "recent")
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_URI_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    AFTER_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    EXPECT_EVERY_HOURS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    LAST_NEW_FILE_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    feed_id: str
    customer_id: str
    product_type: str
    prefix_uri: str
    pattern: str
    options: _struct_pb2.Struct
    schedule: _struct_pb2.Struct
    after_success: _struct_pb2.Value
    expect_every_hours: float
    paused: bool
    late: bool
    next_run_at: _timestamp_pb2.Timestamp
    last_run: FeedRun
    last_new_file_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    files: FeedFileCounts
    recent: _containers.RepeatedCompositeFieldContainer[FeedFile]
    def __init__(self, feed_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., product_type: _Optional[str] = ..., prefix_uri: _Optional[str] = ..., pattern: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., schedule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after_success: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., expect_every_hours: _Optional[float] = ..., paused: _Optional[bool] = ..., late: _Optional[bool] = ..., next_run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run: _Optional[_Union[FeedRun, _Mapping]] = ..., last_new_file_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., files: _Optional[_Union[FeedFileCounts, _Mapping]] = ..., recent: _Optional[_Iterable[_Union[FeedFile, _Mapping]]] = ...) -> None: ...

class FeedRun(_message.Message):
    __slots__ = ("at", "found", "enqueued", "error")
    AT_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    found: int
    enqueued: int
    error: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., found: _Optional[int] = ..., enqueued: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class FeedFileCounts(_message.Message):
    __slots__ = ("seen", "imported", "failed", "pending")
    SEEN_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    seen: int
    imported: int
    failed: int
    pending: int
    def __init__(self, seen: _Optional[int] = ..., imported: _Optional[int] = ..., failed: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...

class FeedFile(_message.Message):
    __slots__ = ("version", "key", "size", "seen_at", "job_id", "status", "error", "attempts")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    key: str
    size: int
    seen_at: _timestamp_pb2.Timestamp
    job_id: str
    status: str
    error: str
    attempts: int
    def __init__(self, version: _Optional[str] = ..., key: _Optional[str] = ..., size: _Optional[int] = ..., seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_id: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...
