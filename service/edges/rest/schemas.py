"""The component schemas of the REST edge's OpenAPI document: the request, the options, a job,
a log line, a reject, a page, a feed, an error. Enumerations come from the code that enforces
them (statuses, options, limits, a feed's fields), so the document cannot drift from them.
"""

from __future__ import annotations

from typing import Any

from service.edges.api import MAX_LIST_LIMIT, STATUSES
from service.stages.enqueue import FORMATS, MAX_SHEET_ROWS, MAX_SHEETS, MODES, ON_INVALID, OPTION_TYPES
from service.stages.feeds import (
    FIELDS,
    MAX_EVERY_SECONDS,
    MAX_EXPECT_HOURS,
    MAX_PATTERN_CHARS,
    MIN_EVERY_SECONDS,
)
from service.storage.feeds import CHANGEABLE
from service.storage.rejects import MAX_PAGE
from service.storage.views import COMPRESSIONS

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _options_schema() -> dict[str, Any]:
    """The options object, built from the option table the request checker enforces."""
    properties: dict[str, Any] = {name: {"type": _JSON_TYPES[kind]} for name, kind in OPTION_TYPES.items()}
    properties["format"]["enum"] = list(FORMATS)
    properties["on_invalid"]["enum"] = list(ON_INVALID)
    properties["delimiter"].update(minLength=1, maxLength=1)
    properties["sheet"] = {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": MAX_SHEETS,
                "uniqueItems": True,
            },
        ],
        "description": "XLSX: the sheet to read (default: the first), or a list of sheets with the same columns, "
        "read one after the other as one file.",
    }
    properties["header_row"].update(
        minimum=1,
        maximum=MAX_SHEET_ROWS,
        description="XLSX: the sheet row of the header (default: the first non-empty row).",
    )
    properties["member"].update(
        minLength=1,
        maxLength=4096,
        description="ZIP archive: the member to import, by its path in the archive (needed when it holds "
        "several data files).",
    )
    properties["mode"].update(
        enum=list(MODES),
        description="append (default) adds the rows; upsert inserts or replaces rows by the product's key; "
        "replace does the same and deletes the rows whose key is not in the file.",
    )
    properties["atomic"]["description"] = "Publish the whole job in one commit; upsert and replace always do."
    properties["allow_empty"]["description"] = "Let a replace with no valid rows empty the table."
    properties["callback_url"].update(
        maxLength=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^@/?#\s]+([/?#]\S*)?$",
        description="Webhook: when the job ends, its view (plus sent_at) is POSTed here, signed in the "
        "X-Import-Signature header. http(s) only, no credentials, and only under one of the customer's "
        "webhook_prefixes (the customer needs a webhook_secret).",
    )
    atomic_modes = [mode for mode in MODES if mode != "append"]
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        # The checker's rules across options: atomic cannot be false in an atomic mode, and
        # allow_empty applies only to replace.
        "allOf": [
            {
                "if": {"required": ["mode"], "properties": {"mode": {"enum": atomic_modes}}},
                "then": {"properties": {"atomic": {"const": True}}},
            },
            {
                "if": {"not": {"required": ["mode"], "properties": {"mode": {"const": "replace"}}}},
                "then": {"not": {"required": ["allow_empty"]}},
            },
        ],
    }


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _job_schema() -> dict[str, Any]:
    """The job view (service.storage.views.job_view)."""
    count = {"type": "integer", "minimum": 0}
    properties = {
        "job_id": {"type": "string", "format": "uuid"},
        "customer_id": {"type": "string"},
        "product_type": {"type": "string"},
        "blob_uri": {"type": "string"},
        "options": {"type": "object"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "rows_total": count,
        "rows_valid": count,
        "rows_invalid": count,
        "rows_inserted": count,
        "rows_updated": count,
        "rows_unchanged": count,
        "rows_duplicate": count,
        "rows_deleted": count,
        "error": _nullable("string"),
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _nullable("string", format="date-time"),
        "finished_at": _nullable("string", format="date-time"),
        "undone_at": _nullable("string", format="date-time"),
        "progress": {
            "type": "object",
            "description": "Chunks of the file validated so far, of all its chunks (null until the file is planned).",
            "properties": {"chunks_done": count, "chunks_total": _nullable("integer", minimum=0)},
            "required": ["chunks_done", "chunks_total"],
            "additionalProperties": False,
        },
        "source": _source_schema(),
        "upload": {
            "type": ["object", "null"],
            "description": "The upload the job imports (enqueued by upload_id): its id and the file name its "
            "client gave; null for a job enqueued by blob_uri.",
            "properties": {"id": {"type": "string", "format": "uuid"}, "filename": {"type": "string"}},
            "required": ["id", "filename"],
            "additionalProperties": False,
        },
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _source_schema() -> dict[str, Any]:
    """Where a job's rows come from (service.storage.views.job_source, SPEC 18)."""
    return {
        "type": "object",
        "description": "Where the rows come from: the blob_uri's scheme, the compression, the format and the ZIP "
        "archive member read; null while not known (before the file is planned) or when there is none.",
        "properties": {
            "scheme": {
                "type": "string",
                "description": "The blob_uri's scheme, lower-cased: file, s3, az, gs, https or http.",
            },
            "compression": _nullable(
                "string", enum=[*COMPRESSIONS, None], description="The file's compression, found by its magic bytes."
            ),
            "format": _nullable(
                "string",
                enum=[*FORMATS, None],
                description="The format read: once planned, the one detected or given; before that the "
                "`format` option, if given.",
            ),
            "member": _nullable("string", description="The ZIP archive member read, when the blob is a ZIP archive."),
        },
        "required": ["scheme", "compression", "format", "member"],
        "additionalProperties": False,
    }


def _log_schema() -> dict[str, Any]:
    """One log line (service.edges.api.log_view)."""
    properties = {
        "at": {"type": "string", "format": "date-time"},
        "level": {"type": "string", "enum": ["info", "warning", "error"]},
        "row_number": _nullable("integer"),
        "field": _nullable("string"),
        "message": {"type": "string"},
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _reject_schema() -> dict[str, Any]:
    """One rejected row (service.edges.api.reject_view)."""
    record = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "The row's cells as read, keyed by the file's header names (a key=value file: its keys).",
    }
    return _object(
        {
            "source_row": {"type": "integer", "minimum": 1},
            "record": record,
            "errors": {"type": "array", "items": ref("FieldError")},
        }
    )


def _object(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """A closed object schema: these required properties, these optional ones, nothing else."""
    return {
        "type": "object",
        "properties": {**required, **optional},
        "required": list(required),
        "additionalProperties": False,
    }


_STORE_PREFIX = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "pattern": "^([fF][iI][lL][eE]|[sS]3|[aA][zZ]|[gG][sS])://",
}


def _feed_fields() -> dict[str, Any]:
    """What a feed's definition may hold (service.stages.feeds.check_feed), by field."""
    return {
        "customer_id": {"type": "string", "minLength": 1, "description": "Needed for a token of several customers."},
        "product_type": {"type": "string", "minLength": 1},
        "prefix_uri": _STORE_PREFIX
        | {
            "description": "The folder (file://) or name prefix (s3://, az://, gs://) to watch, in the customer's area."
        },
        "pattern": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PATTERN_CHARS,
            "description": "A glob (case-sensitive) a file's path below the prefix must match; `*` also matches "
            "`/`. A new feed's is `*`. Paths with a part starting with `.` are never imported.",
        },
        "options": ref("Options"),
        "schedule": {
            "oneOf": [
                _object(
                    {"every_seconds": {"type": "integer", "minimum": MIN_EVERY_SECONDS, "maximum": MAX_EVERY_SECONDS}}
                ),
                _object(
                    {
                        "cron": {
                            "type": "string",
                            "pattern": r"^\s*\S+(\s+\S+){4}\s*$",
                            "description": "Five fields, minute hour day month weekday, in UTC (`0 2 * * *`).",
                        }
                    }
                ),
            ],
            "description": "When the workers run the feed: every N seconds after a run ends, or on a cron schedule.",
        },
        "after_success": {
            "oneOf": [{"enum": ["keep", "delete"]}, _object({"move_to": _STORE_PREFIX})],
            "description": "What becomes of a file once its job succeeded: kept (a new feed's), deleted, or moved "
            "to a prefix of the same store in the customer's area, outside prefix_uri, keeping its path below "
            "the prefix. A file that failed is always kept.",
        },
        "expect_every_hours": _nullable(
            "number",
            exclusiveMinimum=0,
            maximum=MAX_EXPECT_HOURS,
            description="A feed that enqueues no new file for this long is late (a warning, the gauge "
            "import_feed_late, a `feed.late` event to options.callback_url); null: never late.",
        ),
        "paused": {
            "type": "boolean",
            "description": "The workers do not run a paused feed (POST /feeds/{feed_id}/run still does); resuming "
            "sets its next run from now.",
        },
    }


def _feed_schema(detail: bool) -> dict[str, Any]:
    """A feed's view (service.storage.views.feed_view); in detail, its files' counts and latest files."""
    fields = _feed_fields()
    when = {"type": "string", "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    last_run = _object({"at": when, "found": count, "enqueued": count, "error": _nullable("string")}) | {
        "type": ["object", "null"],
        "description": "The last run: the files that matched, the new versions it enqueued (or refused), and "
        "the store's error that stopped it early; null before the first run.",
    }
    properties: dict[str, Any] = {
        "feed_id": {"type": "string", "format": "uuid"},
        "customer_id": {"type": "string"},
        "product_type": {"type": "string"},
        "prefix_uri": {"type": "string", "description": "The prefix watched, ending in `/`."},
        "pattern": {"type": "string"},
        **{name: fields[name] for name in ("options", "schedule", "after_success", "expect_every_hours", "paused")},
        "late": {"type": "boolean", "description": "Late (see expect_every_hours) until a run enqueues a new file."},
        "next_run_at": _nullable(
            "string", format="date-time", description="When the workers run it; null while paused."
        ),
        "last_run": last_run,
        "last_new_file_at": _nullable("string", format="date-time", description="When a run last enqueued a new file."),
        "created_at": when,
        "updated_at": when,
    }
    if detail:
        counts = {
            "seen": count | {"description": "File versions the feed has seen."},
            "imported": count | {"description": "Their job succeeded (or was undone since)."},
            "failed": count | {"description": "Their job failed or was cancelled, or they were refused at enqueue."},
            "pending": count | {"description": "Their job is queued or running."},
        }
        properties["files"] = _object(counts)
        properties["recent"] = {
            "type": "array",
            "items": ref("FeedFile"),
            "description": "Its latest files, newest first.",
        }
    return _object(properties)


def _feed_request() -> dict[str, Any]:
    """POST /feeds: a feed's definition, every field of FIELDS."""
    fields = _feed_fields()
    needed = ("product_type", "prefix_uri", "schedule")
    return _object(
        {name: fields[name] for name in FIELDS if name in needed},
        **{name: fields[name] for name in FIELDS if name not in needed},
    )


def _feed_file_schema() -> dict[str, Any]:
    """One version of a file a feed has seen (service.storage.views.feed_view's `recent`)."""
    return _object(
        {
            "version": {
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
                "description": "The version's id (the file's URI with its ETag, generation or size and mtime): "
                "POST /feeds/{feed_id}/files/{version}/retry takes it.",
            },
            "key": {"type": "string", "description": "The file's URI."},
            "size": {"type": "integer", "minimum": 0},
            "seen_at": {"type": "string", "format": "date-time"},
            "job_id": _nullable("string", format="uuid", description="Its job; null when it was refused at enqueue."),
            "status": _nullable(
                "string",
                enum=[*STATUSES, "refused", None],
                description="Its job's status; `refused` when it has no job (error says why).",
            ),
            "error": _nullable("string", description="Why it was refused at enqueue (a job's error is in the job)."),
            "attempts": {
                "type": "integer",
                "minimum": 1,
                "description": "Jobs made for this version: 1, and one more each retry.",
            },
        }
    )


def schemas() -> dict[str, Any]:
    """Every component schema."""
    text = {"type": "string", "minLength": 1}
    error_body = _object(
        {"status": {"type": "integer", "minimum": 400, "maximum": 599}, "message": {"type": "string"}},
        field=_nullable("string"),
    )
    return {
        "EnqueueRequest": _object(
            {"customer_id": text, "product_type": text},
            blob_uri=text
            | {
                "pattern": "^([fF][iI][lL][eE]|[sS]3|[aA][zZ]|[gG][sS]|[hH][tT][tT][pP][sS]?)://",
                "description": "file://, s3://, az://, gs://, or https:// (http://) under one of the "
                "customer's url_prefixes; any case.",
            },
            upload_id={
                "type": "string",
                "format": "uuid",
                "description": "A finished upload of the same customer (POST /uploads), instead of blob_uri.",
            },
            options=ref("Options"),
        )
        | {"oneOf": [{"required": ["blob_uri"]}, {"required": ["upload_id"]}]},
        "Options": _options_schema(),
        "PresignRequest": _object(
            {
                "filename": text
                | {"maxLength": 1024, "description": "The file's name; its basename names the new blob."}
            },
            customer_id=text | {"description": "Needed for a token of several customers."},
            expires_in={"type": "integer", "minimum": 1, "description": "Seconds the URL is valid; at most 3600."},
        ),
        "Presigned": _object(
            {
                "url": {"type": "string", "description": "Where to send the file; it carries its signature."},
                "method": {"const": "PUT"},
                "headers": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Headers the request must carry (Azure: x-ms-blob-type).",
                },
                "blob_uri": {"type": "string", "description": "What to enqueue once the file is there."},
                "expires_at": {"type": "string", "format": "date-time"},
            }
        ),
        "Upload": _object(
            {
                "upload_id": {"type": "string", "format": "uuid"},
                "customer_id": {"type": "string"},
                "filename": {"type": "string"},
                "length": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
                "finished": {"type": "boolean"},
                "expires_at": _nullable("string", format="date-time", description="null once finished."),
            }
        ),
        "Enqueued": _object({"job_id": {"type": "string", "format": "uuid"}, "status": {"const": "queued"}}),
        "Job": _job_schema(),
        "JobList": _object({"jobs": {"type": "array", "items": ref("Job")}}),
        "LogLine": _log_schema(),
        "Logs": _object({"logs": {"type": "array", "items": ref("LogLine")}}),
        "FieldError": _object({"field": _nullable("string"), "message": {"type": "string"}}),
        "Reject": _reject_schema(),
        "RejectPage": _object(
            {
                "rejects": {"type": "array", "items": ref("Reject"), "maxItems": MAX_PAGE},
                "next": _nullable(
                    "integer", minimum=1, description="The `after` of the next page; null on the last page."
                ),
            }
        ),
        "FeedRequest": _feed_request(),
        "FeedChange": _object({}, **{name: _feed_fields()[name] for name in CHANGEABLE}),
        "Feed": _feed_schema(detail=False),
        "FeedDetail": _feed_schema(detail=True),
        "FeedFile": _feed_file_schema(),
        "FeedList": _object({"feeds": {"type": "array", "items": ref("Feed"), "maxItems": MAX_LIST_LIMIT}}),
        "FeedFilePage": _object(
            {
                "files": {"type": "array", "items": ref("FeedFile"), "maxItems": MAX_LIST_LIMIT},
                "next": _nullable(
                    "string", description="The `after` of the next page (a version); null on the last page."
                ),
            }
        ),
        "FeedRun": _object(
            {
                "found": {"type": "integer", "minimum": 0, "description": "Files under the prefix that match."},
                "enqueued": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "New versions among them, each enqueued (or refused at enqueue).",
                },
                "error": _nullable("string", description="The store's error that stopped the run early, if any."),
                "feed": ref("FeedDetail"),
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Ready": _object({"status": {"const": "ready"}}),
        "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
        "Error": _object({"error": error_body}),
    }
