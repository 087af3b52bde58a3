"""The REST edge: a falcon app over service.api; errors become HTTP answers here and only here.

`create_app(edge)` is for tests; `gunicorn service.rest:app` builds the module-level `app`
on first use, from the configuration, and stops with one line when that configuration is bad.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import falcon
import psycopg2
import psycopg2.pool

from service import logs
from service.config import Config, load_config
from service.edges.api import Access, Api, JobNotFound, PermissionDenied, Unauthenticated, job_view, log_view
from service.edges.rest.metrics import HttpMetrics, MetricsResource
from service.edges.rest.openapi import MAX_BODY_BYTES, document
from service.edges.rest.ui import UiResource
from service.edges.wiring import Edge, build_edge
from service.errors import BlobUnavailable, ConfigError, CustomerDBUnavailable, JobConflict, RequestRefused
from service.storage.db import describe, redact
from service.storage.jobs import IdempotencyConflict, Job, ping

log = logging.getLogger(__name__)

# What the Api and the job store report, and the status each becomes at this edge.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (RequestRefused, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (JobNotFound, 404),
    (IdempotencyConflict, 409),
    (JobConflict, 409),
)
DB_UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)
_READ_CHUNK = 64 * 1024
CSV = "text/csv; charset=utf-8"
DRAIN_BYTES = 8 * 1024 * 1024  # what a refused or ignored body may cost us to read and drop


# -- resources: parse, call the Api, serialize ------------------------------------------


class EnqueueResource:
    """POST /enqueue."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue a job: 202 when created, 200 with the job when a key is replayed."""
        body = read_json(req)
        job, created = self.api.enqueue(req.context.access, body, req.get_header("Idempotency-Key"))
        if created:
            accepted(resp, job)
        else:
            resp.media = job_view(job)


def accepted(resp: falcon.Response, job: Job) -> None:
    """202 for a new job: its id and status, and where to follow it."""
    resp.status = falcon.HTTP_202
    resp.location = f"/jobs/{job.id}"
    resp.media = {"job_id": job.id, "status": job.status}


class JobResource:
    """GET /jobs/{job_id}."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job, if the token may see it."""
        resp.media = job_view(self.api.job(req.context.access, job_id))


class JobLogsResource:
    """GET /jobs/{job_id}/logs."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job's log lines, oldest first."""
        resp.media = {"logs": [log_view(line) for line in self.api.logs(req.context.access, job_id)]}


class JobRejectsResource:
    """GET /jobs/{job_id}/rejects?after=&limit=."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """One page of the job's rejected rows by source_row, and the `after` of the next page."""
        after, limit = req.get_param("after"), req.get_param("limit")
        rejects, following = self.api.rejects_page(req.context.access, job_id, after, limit)
        resp.media = {"rejects": rejects, "next": following}


class JobRejectsCsvResource:
    """GET /jobs/{job_id}/rejects.csv."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job's rejects.csv, streamed as the customer database yields it."""
        job = self.api.job(req.context.access, job_id)
        pieces = self.api.rejects_csv(req.context.access, job.id)
        # The first piece is read before the answer starts: an unreachable customer database is
        # then a 503, not a 200 cut short. Later failures can only cut the stream (see _streamed).
        first = next(pieces, b"")
        resp.content_type = CSV
        resp.set_header("Content-Disposition", f'attachment; filename="{job.id}-rejects.csv"')
        resp.stream = _streamed(first, pieces, job.id)


def _streamed(first: bytes, pieces: Iterator[bytes], job_id: str) -> Iterator[bytes]:
    """The first piece, then the rest; a failure once the status is sent is logged and cuts the answer.

    Re-raising makes the server close the connection without the last chunk, so the client
    sees an incomplete download rather than a short file that looks whole. A client that
    leaves early closes this generator, and with it the customer database's cursor.
    """
    try:
        yield first
        yield from pieces
    except Exception as exc:
        log.error("job %s: rejects.csv cut short: %s", job_id, redact(str(exc)))
        raise
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


class JobChangeResource:
    """POST /jobs/{job_id}/cancel and POST /jobs/{job_id}/undo: one Api call, no body needed."""

    def __init__(self, change: Callable[[Access, str], tuple[Job, bool]]) -> None:
        self.change = change

    def on_post(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """200 with the job once the change is complete, 202 while a worker completes it."""
        discard_body(req)
        job, complete = self.change(req.context.access, job_id)
        if not complete:
            resp.status = falcon.HTTP_202
            resp.location = f"/jobs/{job.id}"
        resp.media = job_view(job)


class JobReplayResource:
    """POST /jobs/{job_id}/replay: no body needed."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """202 with a new job that validates the job's stored rejects again, like an enqueue;
        200 with the replay job already queued, running or succeeded (asked twice)."""
        discard_body(req)
        job, created = self.api.replay_job(req.context.access, job_id)
        if created:
            accepted(resp, job)
        else:
            resp.media = job_view(job)


class JobListResource:
    """GET /jobs?customer_id=&status=&limit=."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Jobs newest first, only of customers the token may see."""
        jobs = self.api.list_jobs(
            req.context.access, req.get_param("customer_id"), req.get_param("status"), req.get_param("limit")
        )
        resp.media = {"jobs": [job_view(job) for job in jobs]}


class HealthResource:
    """GET /healthz: the process answers; no database involved."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always ok while the process serves."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """GET /readyz: the app database answers."""

    public = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 when the app DB answers; a failure becomes 503 in the handler."""
        ping(self.dsn)
        resp.media = {"status": "ready"}


class OpenApiResource:
    """GET /openapi.json."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The OpenAPI document."""
        resp.media = document()


# -- request bodies -----------------------------------------------------------------------


def read_json(req: falcon.Request) -> Any:
    """The request body parsed as JSON; 415, 413 or 400 (RequestRefused) when it cannot be."""
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type != falcon.MEDIA_JSON and not content_type.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(description="the body must be JSON (Content-Type: application/json)")
    raw = read_body(req, MAX_BODY_BYTES)
    if not raw.strip():
        raise RequestRefused("the request body is empty; send a JSON object", field=None)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise RequestRefused(f"malformed JSON: {exc}", field=None) from None


def read_body(req: falcon.Request, limit: int) -> bytes:
    """Read at most limit bytes of body; 413 when the declared or the actual size is larger."""
    length = req.content_length
    stream = _body_stream(req)
    if stream is None:
        return b""
    if length is not None and length > limit:
        _refuse_too_large(stream, limit, length)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        _refuse_too_large(stream, limit, length)
    return b"".join(chunks)


def discard_body(req: falcon.Request) -> None:
    """Read and drop a body the route has no use for (clients often send `{}`), up to DRAIN_BYTES.

    Unread data would make the kernel reset the connection when the worker closes it, and the
    client could lose the answer (see _refuse_too_large).
    """
    stream = _body_stream(req)
    dropped = 0
    while stream is not None and dropped < DRAIN_BYTES and (chunk := stream.read(_READ_CHUNK)):
        dropped += len(chunk)


def _body_stream(req: falcon.Request) -> Any:
    """The stream a body can be read from safely, or None when the request has no body."""
    if req.content_length is not None:
        return req.bounded_stream
    if req.env.get("wsgi.input_terminated"):
        # A chunked body has no Content-Length; the server marks its end, so reading is safe.
        return req.stream
    return None


def _refuse_too_large(stream: Any, limit: int, length: int | None) -> NoReturn:
    """Raise 413, first dropping the rest of a moderately large body.

    The worker closes the connection after answering; unread data makes the kernel reset it,
    and a client still sending would then never read the 413. Past DRAIN_BYTES, it may not.
    """
    if length is None or length <= DRAIN_BYTES:
        dropped = 0
        while dropped < DRAIN_BYTES and (chunk := stream.read(_READ_CHUNK)):
            dropped += len(chunk)
    raise falcon.HTTPContentTooLarge(description=f"the request body is over {limit} bytes")


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
        if not getattr(resource, "public", False):
            req.context.access = self.api.authenticate(req.get_header("Authorization"))


# -- errors: one JSON shape for every answer that is not a success -----------------------


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"status", "message", "field"}}."""
    return {"error": {"status": status, "message": message, "field": field}}


def _service_error(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """A refused request, a missing token, a hidden job...: its status and message, with the field."""
    status = next(code for kind, code in ERROR_STATUS if isinstance(error, kind))
    resp.status = status
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
    """Every route and the resource that answers it (service.openapi documents the same)."""
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
        ("/healthz", HealthResource()),
        ("/readyz", ReadyResource(edge.dsn)),
        ("/openapi.json", OpenApiResource()),
        ("/ui", UiResource()),
        ("/metrics", MetricsResource(http or HttpMetrics(), edge.api.jobs, edge.config.metrics_token)),
    ]


def create_app(edge: Edge) -> falcon.App:
    """The falcon app serving the edge's Api."""
    http = HttpMetrics()
    middleware: list[Any] = [http, RequestJob(), Authenticate(edge.api)]
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
