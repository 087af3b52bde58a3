"""The REST edge: a falcon app over the Api (resources.py); errors become HTTP answers here and only here.

`create_app(edge)` is for tests; `gunicorn service.rest:app` builds the module-level `app`
on first use, from the configuration, and stops with one line when that configuration is bad.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any, NoReturn

import falcon
import psycopg2
import psycopg2.pool

from service import logs
from service.config import Config, load_config
from service.edges.api import (
    Api,
    FeedBusy,
    FeedNotFound,
    JobNotFound,
    PermissionDenied,
    PresignUnavailable,
    Unauthenticated,
)
from service.edges.rest.bodies import discard_body
from service.edges.rest.feeds import (
    FeedFileRetryResource,
    FeedFilesResource,
    FeedResource,
    FeedRunResource,
    FeedsResource,
)
from service.edges.rest.metrics import HttpMetrics, MetricsResource
from service.edges.rest.resources import (
    EnqueueResource,
    HealthResource,
    JobChangeResource,
    JobListResource,
    JobLogsResource,
    JobRejectsCsvResource,
    JobRejectsResource,
    JobReplayResource,
    JobResource,
    OpenApiResource,
    ReadyResource,
)
from service.edges.rest.ui import TusScriptResource, UiResource
from service.edges.rest.uploads import PresignResource, TusHeaders, UploadResource, UploadsResource
from service.edges.wiring import Edge, build_edge
from service.errors import BlobUnavailable, ConfigError, CustomerDBUnavailable, JobConflict, RequestRefused
from service.logs import describe, redact
from service.stages.uploads import ChecksumMismatch, OffsetConflict, TooLarge, UploadBusy, UploadGone
from service.storage.jobs import IdempotencyConflict

log = logging.getLogger(__name__)

# What the Api and the job store report, and the status each becomes at this edge.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (RequestRefused, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (JobNotFound, 404),
    (FeedNotFound, 404),
    (FeedBusy, 409),
    (IdempotencyConflict, 409),
    (JobConflict, 409),
    (UploadGone, 404),
    (OffsetConflict, 409),
    (TooLarge, 413),
    (UploadBusy, 423),
    (ChecksumMismatch, 460),
    (PresignUnavailable, 503),
)
# Statuses falcon has no reason phrase for (tus's own).
REASONS = {460: "460 Checksum Mismatch"}
DB_UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


# -- the job a request is about, for the access log ---------------------------------------


class RequestJob:
    """Middleware: the job a request turned out to be about (found by the Api) goes into the
    WSGI environ, so gunicorn's access-log line carries its job_id and customer_id (SPEC 16)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A new request is about no job yet."""
        logs.request_job(clear=True)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Copy the job the Api found, if any, into the environ."""
        seen = logs.request_job(clear=True)
        if seen is not None:
            for key, value in zip(logs.ACCESS_JOB_KEYS, seen, strict=True):
                req.env[key] = value


# -- authentication -----------------------------------------------------------------------


class Authenticate:
    """Middleware: every resource not marked public needs a token the Api accepts."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        """Put the caller's Access on req.context, or raise Unauthenticated."""
        if not getattr(resource, "public", False) and req.method not in getattr(resource, "public_methods", ()):
            req.context.access = self.api.authenticate(req.get_header("Authorization"))


# -- errors: one JSON shape for every answer that is not a success -----------------------


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"status", "message", "field"}}."""
    return {"error": {"status": status, "message": message, "field": field}}


def _service_error(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """A refused request, a missing token, a hidden job...: its status and message, with the field."""
    status = next(code for kind, code in ERROR_STATUS if isinstance(error, kind))
    discard_body(req)  # an upload's bytes not taken: the client must still read this answer
    resp.status = REASONS.get(status, status)
    resp.media = error_body(status, str(error), getattr(error, "field", None))
    if status == 401:
        resp.set_header("WWW-Authenticate", "Bearer")


def _http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
    """Falcon's own errors (404 route, 405, 413, 415, bad headers) in the same shape."""
    message = ex.description or (ex.title or "").partition(" ")[2] or "error"
    allowed = dict(ex.headers or {}).get("Allow")
    if ex.status_code == 405 and allowed:
        message = f"{req.method} is not allowed here (allowed: {allowed})"
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(error_body(ex.status_code, message)).encode()


def _unavailable(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """The app database cannot be reached: 503, so clients retry; the reason goes to the log."""
    job = (params or {}).get("job_id", "-")
    log.warning("%s %r (job %r): the app database is unavailable: %s", req.method, req.path, job, describe(error))
    resp.status = 503
    resp.media = error_body(503, "the app database is unavailable; try again shortly")


def _customer_db_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    """The customer's database cannot be reached: 503 like the app database; the reason goes to the log."""
    job = (params or {}).get("job_id", "-")
    log.warning("%s %r (job %r): %s", req.method, req.path, job, redact(str(error)))
    resp.status = 503
    resp.media = error_body(503, "the customer database is unavailable; try again shortly")


def _blob_store_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    """The customer's S3 endpoint cannot be reached: 503, naming the endpoint (never credentials)."""
    log.warning("%s %r: %s", req.method, req.path, redact(str(error)))
    resp.status = 503
    resp.media = error_body(503, f"{redact(str(error))}; try again shortly")


def _crashed(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """Anything else is our fault: log it without secrets and answer a bare 500."""
    job = (params or {}).get("job_id", "-")
    trace = redact("".join(traceback.format_exception(error)))
    # %r: the path and job id come from the client, and must not forge log lines.
    log.error("%s %r (job %r) failed:\n%s", req.method, req.path, job, trace)
    resp.status = 500
    resp.media = error_body(500, "internal error")


# -- the app ------------------------------------------------------------------------------


def routes(edge: Edge, http: HttpMetrics | None = None) -> list[tuple[str, object]]:
    """Every route and the resource that answers it (openapi.py documents the same)."""
    return [
        ("/enqueue", EnqueueResource(edge.api)),
        ("/jobs", JobListResource(edge.api)),
        ("/jobs/{job_id}", JobResource(edge.api)),
        ("/jobs/{job_id}/logs", JobLogsResource(edge.api)),
        ("/jobs/{job_id}/rejects", JobRejectsResource(edge.api)),
        ("/jobs/{job_id}/rejects.csv", JobRejectsCsvResource(edge.api)),
        ("/jobs/{job_id}/cancel", JobChangeResource(edge.api.cancel)),
        ("/jobs/{job_id}/undo", JobChangeResource(edge.api.undo)),
        ("/jobs/{job_id}/replay", JobReplayResource(edge.api)),
        ("/feeds", FeedsResource(edge.api)),
        ("/feeds/{feed_id}", FeedResource(edge.api)),
        ("/feeds/{feed_id}/run", FeedRunResource(edge.api)),
        ("/feeds/{feed_id}/files", FeedFilesResource(edge.api)),
        ("/feeds/{feed_id}/files/{version}/retry", FeedFileRetryResource(edge.api)),
        ("/uploads", UploadsResource(edge.api)),
        ("/uploads/{upload_id}", UploadResource(edge.api)),
        ("/uploads/presign", PresignResource(edge.api)),
        ("/healthz", HealthResource()),
        ("/readyz", ReadyResource(edge.dsn)),
        ("/openapi.json", OpenApiResource()),
        ("/ui", UiResource()),
        ("/ui/tus.min.js", TusScriptResource()),
        ("/metrics", MetricsResource(http or HttpMetrics(), edge.api.jobs, edge.config.metrics_token)),
    ]


def create_app(edge: Edge) -> falcon.App:
    """The falcon app serving the edge's Api."""
    http = HttpMetrics()
    middleware: list[Any] = [http, RequestJob(), Authenticate(edge.api), TusHeaders()]
    app = falcon.App(middleware=middleware)
    for template, resource in routes(edge, http):
        app.add_route(template, resource)
    # Falcon picks the most specific handler, so HTTPError keeps its own (serialized below).
    app.add_error_handler(Exception, _crashed)
    for unavailable in DB_UNAVAILABLE:
        app.add_error_handler(unavailable, _unavailable)
    app.add_error_handler(CustomerDBUnavailable, _customer_db_unavailable)
    app.add_error_handler(BlobUnavailable, _blob_store_unavailable)
    for kind, _ in ERROR_STATUS:
        app.add_error_handler(kind, _service_error)
    app.set_error_serializer(_http_error)
    return app


# -- gunicorn entry point -----------------------------------------------------------------

_config: Config | None = None
_app: falcon.App | None = None


def _stop(problem: str) -> NoReturn:
    """Print one line naming the problem and stop the process (exit code 2, as importctl)."""
    print(f"import-service REST: {problem}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def startup_config() -> Config:
    """The process's configuration, read once; a bad one stops the process with one line."""
    global _config
    if _config is None:
        try:
            _config = load_config()
        except ConfigError as exc:
            _stop(f"configuration error: {exc}")
    return _config


def _build_app() -> falcon.App:
    """Configure logging, build the edge (migrating the app DB) and the app, or stop."""
    config = startup_config()
    try:
        logs.configure(config.log_format, config.log_level.upper())
    except ValueError:
        _stop(f"configuration error: log_level {config.log_level!r} is not a logging level")
    try:
        edge = build_edge(config)
    except ConfigError as exc:
        _stop(f"configuration error: {exc}")
    except (psycopg2.Error, OSError) as exc:
        _stop(f"cannot use the app database: {describe(exc)}")
    return create_app(edge)


def __getattr__(name: str) -> Any:
    """Build `app` on first access, so importing this module (tests, tools) needs no config."""
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
