"""The gRPC edge (SPEC section 9): importer.Importer over `Api`, plus health and reflection.

`python -m service.grpc_server` serves on GRPC_ADDR until SIGTERM or SIGINT. The servicer only
translates: parse the request, call `edge.api`, build the reply; service errors become status codes.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import grpc
import psycopg2
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import logs
from service.api import Access, Api, JobNotFound, PermissionDenied, Unauthenticated
from service.db import describe, redact
from service.errors import BlobUnavailable, ConfigError, CustomerDBUnavailable, JobConflict, RequestRefused
from service.generated import importer_pb2, importer_pb2_grpc
from service.jobs import IdempotencyConflict, Job
from service.rejects import Reject
from service.wiring import Edge, build_edge

log = logging.getLogger(__name__)

SERVICE_NAME = importer_pb2.DESCRIPTOR.services_by_name["Importer"].full_name
# Every call holds a pool thread for as long as it lasts, and a WatchJob stream lasts until its
# job ends: so at most MAX_WATCHES of the MAX_WORKERS threads may watch, and the rest stay free
# for unary calls. The app-DB pool gets one connection per thread (see main).
MAX_WORKERS = 16
MAX_WATCHES = 12
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_DETAILS = 500
POLL_SECONDS = 0.2
GRACE_SECONDS = 10.0
EXIT_OK, EXIT_CONFIG = 0, 2
COUNTS = (
    "rows_total",
    "rows_valid",
    "rows_invalid",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_duplicate",
    "rows_deleted",
)
TIMES = ("created_at", "started_at", "finished_at", "undone_at")
PROGRESS = ("status", *COUNTS, "chunks_done", "chunks_total")
ERROR_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (JobNotFound, grpc.StatusCode.NOT_FOUND),
    (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (JobConflict, grpc.StatusCode.FAILED_PRECONDITION),
)

Method = TypeVar("Method", bound=Callable[..., Any])


class Refused(Exception):
    """A refusal with its own status code (too many watches, shutting down)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request the protobuf library could not parse (corrupt, nested too deeply)."""

    reason: str


class LenientDecoding(grpc.ServerInterceptor):
    """Hand Importer methods an Undecodable instead of letting grpc answer INTERNAL for bad bytes."""

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        """Wrap the request deserializer of importer.Importer methods."""
        handler = continuation(details)
        method = getattr(details, "method", "")
        if handler is None or handler.request_deserializer is None or not method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        return handler._replace(request_deserializer=_lenient(handler.request_deserializer))


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A deserializer that returns Undecodable rather than raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return deserialize


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for an exception raised by a call."""
    code, message = _status(exc)
    # Messages may quote request values; past the peer's metadata limit the client would get
    # RESOURCE_EXHAUSTED instead of our code (percent-encoding grows a character up to 12 bytes).
    return code, message if len(message) <= MAX_DETAILS else message[: MAX_DETAILS - 1] + "…"


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and full message for an exception."""
    if isinstance(exc, Refused):
        return exc.code, str(exc)
    if isinstance(exc, RequestRefused):
        named = exc.field is None or exc.field in str(exc)
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc) if named else f"{exc.field}: {exc}"
    for kind, code in ERROR_CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, psycopg2.OperationalError):
        # The app DB is down or restarting: a client may retry, so not INTERNAL.
        log.warning("app database unavailable: %s", describe(exc))
        return grpc.StatusCode.UNAVAILABLE, "the job database is unavailable; try again"
    if isinstance(exc, BlobUnavailable):
        log.warning("%s", redact(str(exc)))
        return grpc.StatusCode.UNAVAILABLE, "the blob store is unavailable; try again"
    if isinstance(exc, CustomerDBUnavailable):
        # Its message names the database: for the log, not for the client.
        log.warning("%s", redact(str(exc)))
        return grpc.StatusCode.UNAVAILABLE, "the customer database is unavailable; try again"
    log.error("unexpected error in a gRPC call\n%s", redact("".join(traceback.format_exception(exc))))
    return grpc.StatusCode.INTERNAL, "internal error"


def _check_decoded(request: Any) -> None:
    """Refuse a request the interceptor could not decode."""
    if isinstance(request, Undecodable):
        raise RequestRefused(f"the request is not a well-formed message ({request.reason})", field="request")


def unary(method: Method) -> Method:
    """Turn the exceptions of a unary handler into status codes."""

    @functools.wraps(method)
    def handle(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            _check_decoded(request)
            return method(self, request, context)
        except Exception as exc:  # every failure becomes a status (abort raises, so it comes after)
            code, message = status_for(exc)
        context.abort(code, message)

    return handle  # type: ignore[return-value]


def streaming(method: Method) -> Method:
    """Turn the exceptions of a response-streaming handler into status codes."""

    @functools.wraps(method)
    def handle(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            _check_decoded(request)
            yield from method(self, request, context)
            return
        except Exception as exc:  # GeneratorExit (client gone) is not an Exception: it passes
            code, message = status_for(exc)
        context.abort(code, message)

    return handle  # type: ignore[return-value]


def plain(value: struct_pb2.Value) -> Any:
    """A Struct Value as plain Python (numbers stay floats; an unset Value is None)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: plain(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [plain(item) for item in value.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(value, kind)


def job_message(job: Job) -> importer_pb2.Job:
    """The Job message for a job: times and error left unset while they are null."""
    message = importer_pb2.Job(
        job_id=job.id,
        customer_id=job.customer_id,
        product_type=job.product_type,
        blob_uri=job.blob_uri,
        status=job.status,
        **{name: getattr(job, name) for name in COUNTS},
    )
    message.options.update(job.options)
    message.chunks_done = job.chunks_done
    if job.chunks_total is not None:
        message.chunks_total = job.chunks_total
    if job.error is not None:
        message.error = job.error
    for name in TIMES:
        if getattr(job, name) is not None:
            getattr(message, name).FromDatetime(getattr(job, name))
    return message


def reject_message(reject: Reject, record: dict[str, str]) -> importer_pb2.Reject:
    """The Reject message for a stored rejected row: its cells by header name, its errors ("" for no field)."""
    errors = [importer_pb2.FieldError(field=e.get("field") or "", message=str(e["message"])) for e in reject.errors]
    message = importer_pb2.Reject(source_row=reject.source_row, errors=errors)
    message.record.update(record)
    return message


def _progress(job: Job) -> tuple[Any, ...]:
    """What a watcher is told about when it changes."""
    return tuple(getattr(job, name) for name in PROGRESS)


class ImporterServicer(importer_pb2_grpc.ImporterServicer):
    """importer.Importer: every call authenticates, then asks the Api."""

    def __init__(self, api: Api, stopping: threading.Event) -> None:
        self._api = api
        self._stopping = stopping
        self._watch_slots = threading.BoundedSemaphore(MAX_WATCHES)

    def _access(self, context: grpc.ServicerContext) -> Access:
        """The caller's Access from the `authorization` metadata."""
        metadata = {key: value for key, value in context.invocation_metadata()}
        value = metadata.get("authorization")
        return self._api.authenticate(value if isinstance(value, str) else None)

    @unary
    def Enqueue(self, request: struct_pb2.Struct, context: grpc.ServicerContext) -> struct_pb2.Struct:
        """Enqueue from a Struct {customer_id, product_type, blob_uri, options?, idempotency_key?}."""
        access = self._access(context)
        body = {key: plain(value) for key, value in request.fields.items()}
        key = body.pop("idempotency_key", None)
        if key is not None and not isinstance(key, str):
            raise RequestRefused("idempotency_key must be a string", field="idempotency_key")
        job, _ = self._api.enqueue(access, body, key)
        reply = struct_pb2.Struct()
        reply.update({"job_id": job.id, "status": job.status})
        return reply

    @unary
    def GetJob(self, request: importer_pb2.GetJobRequest, context: grpc.ServicerContext) -> importer_pb2.Job:
        """The job, if the caller may see it."""
        return job_message(self._api.job(self._access(context), request.job_id))

    @unary
    def CancelJob(self, request: importer_pb2.GetJobRequest, context: grpc.ServicerContext) -> importer_pb2.Job:
        """Cancel a queued or running job; the Job as it is now (it may still be ending)."""
        job, _ = self._api.cancel(self._access(context), request.job_id)
        return job_message(job)

    @unary
    def UndoJob(self, request: importer_pb2.GetJobRequest, context: grpc.ServicerContext) -> importer_pb2.Job:
        """Undo a succeeded job; the Job as it is now (a worker may still be undoing it)."""
        job, _ = self._api.undo(self._access(context), request.job_id)
        return job_message(job)

    @unary
    def ReplayRejects(self, request: importer_pb2.GetJobRequest, context: grpc.ServicerContext) -> importer_pb2.Job:
        """A new job that validates the job's stored rejects again (SPEC 14); the new job, queued."""
        return job_message(self._api.replay(self._access(context), request.job_id))

    @streaming
    def ListRejects(
        self, request: importer_pb2.ListRejectsRequest, context: grpc.ServicerContext
    ) -> Iterator[importer_pb2.Reject]:
        """The job's rejected rows after `after`, in source_row order, at most `limit` (0: 100)."""
        access = self._access(context)
        for reject, record in self._api.rejects_stream(access, request.job_id, request.after, request.limit):
            yield reject_message(reject, record)

    @streaming
    def WatchJob(
        self, request: importer_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[importer_pb2.Job]:
        """The job now, then on each change of status or counts, ending after the final status."""
        access = self._access(context)
        job = self._api.job(access, request.job_id)
        if not self._watch_slots.acquire(blocking=False):
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many jobs are being watched; poll GetJob")
        try:
            yield from self._follow(access, job, context)
        finally:
            self._watch_slots.release()

    def _follow(self, access: Access, job: Job, context: grpc.ServicerContext) -> Iterator[importer_pb2.Job]:
        """Poll the job row and yield each change until the job ends or the client leaves."""
        yield job_message(job)
        seen = _progress(job)
        while not job.finished:
            if self._stopping.wait(POLL_SECONDS):
                raise Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; call WatchJob again")
            if not context.is_active():
                return
            job = self._api.job(access, job.id)
            if _progress(job) != seen:
                seen = _progress(job)
                yield job_message(job)


@dataclass(frozen=True)
class Served:
    """A bound (not yet started) server and what a graceful stop needs."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    stopping: threading.Event

    def shutdown(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, refuse new calls, end watches, let other calls finish."""
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        self.stopping.set()
        stopped.wait()


def serve(edge: Edge, address: str) -> Served:
    """Build the server with Importer, health and reflection, bound to address."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
        interceptors=(LenientDecoding(),),
        # so_reuseport off: a port another process holds is an error, not a shared port.
        options=(("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)),
    )
    stopping = threading.Event()
    importer_pb2_grpc.add_ImporterServicer_to_server(ImporterServicer(edge.api, stopping), server)
    checker = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"GRPC_ADDR {address!r}: cannot listen there ({exc})") from None
    return Served(server, port, checker, stopping)


def create_server(edge: Edge, address: str) -> grpc.Server:
    """A bound, not yet started gRPC server for embedding and tests."""
    return serve(edge, address).server


def _stop_requested() -> threading.Event:
    """An event set by the first SIGTERM or SIGINT."""
    requested = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        requested.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return requested


def _start() -> tuple[Edge, Served]:
    """Read the configuration, reach the app DB, bind; ConfigError for anything wrong."""
    edge = build_edge(maxconn=MAX_WORKERS)
    logs.configure(edge.config.log_format, edge.config.log_level)
    return edge, serve(edge, edge.config.grpc_addr)


def main() -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully; 2 for a bad configuration."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = _stop_requested()
    try:
        edge, served = _start()
    except ConfigError as exc:
        print(f"grpc_server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except psycopg2.Error as exc:
        print(f"grpc_server: configuration error: cannot use the app database: {describe(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    served.server.start()
    log.info("serving importer.Importer, health and reflection on %s", edge.config.grpc_addr)
    stop.wait()
    log.info("stopping: finishing in-flight calls (up to %.0f s)", GRACE_SECONDS)
    served.shutdown()
    edge.api.jobs.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
