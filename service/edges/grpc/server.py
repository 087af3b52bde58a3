"""The gRPC edge (SPEC section 9): importer.Importer over `Api`, plus health and reflection.

`python -m service.grpc_server` serves on GRPC_ADDR until SIGTERM or SIGINT. The servicer only
translates: parse the request, call `edge.api`, build the reply; service errors become status codes.
The server runs on asyncio: unary calls run in a pool of UNARY_THREADS threads, health and
reflection on the event loop, and the streams (service.edges.grpc.streams) hold no thread while open.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent import futures
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import psycopg2
from google.protobuf import empty_pb2, json_format, struct_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import hosts, logs
from service.edges.api import Access, Api, FeedBusy, FeedNotFound, JobNotFound, PermissionDenied, Unauthenticated
from service.edges.grpc.streams import COUNTS, MAX_CUSTOMER_STREAMS, STREAM_THREADS, Refused, Streams
from service.edges.grpc.streams import PROGRESS as PROGRESS  # what a watcher is told about (tests use it)
from service.edges.wiring import Edge, build_edge
from service.errors import BlobUnavailable, ConfigError, CustomerDBUnavailable, JobConflict, RequestRefused
from service.generated import importer_pb2, importer_pb2_grpc
from service.logs import describe, redact
from service.storage.feeds import Feed, FeedFile
from service.storage.jobs import IdempotencyConflict, Job
from service.storage.rejects import Reject
from service.storage.views import feed_file_view, feed_view, job_source, job_upload

log = logging.getLogger(__name__)

SERVICE_NAME = importer_pb2.DESCRIPTOR.services_by_name["Importer"].full_name
# A unary call holds one of these threads while it runs; streams never do. The app-DB pool
# keeps one connection per unary and stream thread (see _start).
UNARY_THREADS = 16
# The most WatchJob/ListRejects streams on one customer's jobs (grpc_streams has the caps).
MAX_WATCHES = MAX_CUSTOMER_STREAMS
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_DETAILS = 500
GRACE_SECONDS = 10.0
EXIT_OK, EXIT_CONFIG = 0, 2
TIMES = ("created_at", "started_at", "finished_at", "undone_at")
ERROR_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (JobNotFound, grpc.StatusCode.NOT_FOUND),
    (FeedNotFound, grpc.StatusCode.NOT_FOUND),
    (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (JobConflict, grpc.StatusCode.FAILED_PRECONDITION),
    (FeedBusy, grpc.StatusCode.FAILED_PRECONDITION),  # a run in progress: the state refuses, as for jobs
)

Method = TypeVar("Method", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request the protobuf library could not parse (corrupt, nested too deeply)."""

    reason: str


class LenientDecoding(grpc.aio.ServerInterceptor):
    """Hand Importer methods an Undecodable instead of letting grpc answer INTERNAL for bad bytes."""

    async def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        """Wrap the request deserializer of importer.Importer methods."""
        handler = await continuation(details)
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
    """Turn the exceptions of a unary handler into status codes (it runs in a unary thread)."""

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
    """Turn the exceptions of a response-streaming coroutine (it writes to the context) into status codes."""

    @functools.wraps(method)
    async def handle(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            _check_decoded(request)
            await method(self, request, context)
            return
        except grpc.aio.BaseError as exc:  # a write to a call that has ended (cancelled, past its deadline)
            log.debug("%s: the call ended before its stream: %r", method.__name__, exc)
            return
        except Exception as exc:  # CancelledError (client gone) is not an Exception: it passes
            if context.done():
                return  # the call ended under us: nobody to tell
            code, message = status_for(exc)
        await context.abort(code, message)

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


def body(request: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct request as the JSON object REST would have been sent."""
    return {key: plain(value) for key, value in request.fields.items()}


def job_message(job: Job) -> importer_pb2.Job:
    """The Job message for a job: times, error and the source's unknowns left unset while they are null."""
    message = importer_pb2.Job(
        job_id=job.id,
        customer_id=job.customer_id,
        product_type=job.product_type,
        blob_uri=hosts.shown_url(job.blob_uri),  # a signed URL's query string is a credential
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
    message.source.CopyFrom(source_message(job_source(job)))
    upload = job_upload(job)
    if upload is not None:
        message.upload.CopyFrom(importer_pb2.Upload(**upload))
    return message


def source_message(source: dict[str, str | None]) -> importer_pb2.Source:
    """The Source message of a job's source view (views.job_source): null fields left unset."""
    return importer_pb2.Source(**{name: value for name, value in source.items() if value is not None})


def reject_message(reject: Reject, record: dict[str, str]) -> importer_pb2.Reject:
    """The Reject message for a stored rejected row: its cells by header name, its errors ("" for no field)."""
    errors = [importer_pb2.FieldError(field=e.get("field") or "", message=str(e["message"])) for e in reject.errors]
    message = importer_pb2.Reject(source_row=reject.source_row, errors=errors)
    message.record.update(record)
    return message


def feed_message(
    feed: Feed, counts: dict[str, int] | None = None, files: list[FeedFile] | None = None
) -> importer_pb2.Feed:
    """The Feed message for a feed: REST's view of it (views.feed_view) parsed, its nulls left unset,
    so that the two edges show a feed alike."""
    return json_format.ParseDict(feed_view(feed, counts, files), importer_pb2.Feed())


class ImporterServicer(importer_pb2_grpc.ImporterServicer):
    """importer.Importer: every call authenticates, then asks the Api (streams through `streams`)."""

    def __init__(self, api: Api, streams: Streams | None = None) -> None:
        self._api = api
        self._streams = streams or Streams(api)

    def _access(self, context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> Access:
        """The caller's Access from the `authorization` metadata."""
        metadata = {key: value for key, value in context.invocation_metadata()}
        value = metadata.get("authorization")
        return self._api.authenticate(value if isinstance(value, str) else None)

    @unary
    def Enqueue(self, request: struct_pb2.Struct, context: grpc.ServicerContext) -> struct_pb2.Struct:
        """Enqueue from a Struct {customer_id, product_type, blob_uri, options?, idempotency_key?}."""
        access = self._access(context)
        fields = body(request)
        key = fields.pop("idempotency_key", None)
        if key is not None and not isinstance(key, str):
            raise RequestRefused("idempotency_key must be a string", field="idempotency_key")
        job, _ = self._api.enqueue(access, fields, key)
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
    async def ListRejects(
        self, request: importer_pb2.ListRejectsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """The job's rejected rows after `after`, in source_row order, at most `limit` (0: 100)."""
        access = self._access(context)
        async with aclosing(self._streams.rejects(access, request.job_id, request.after, request.limit)) as rows:
            async for reject, record in rows:
                await context.write(reject_message(reject, record))

    @streaming
    async def WatchJob(self, request: importer_pb2.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """The job now, then on each change of status or counts, ending after the final status."""
        access = self._access(context)
        async with aclosing(self._streams.watch(access, request.job_id)) as jobs:
            async for job in jobs:
                await context.write(job_message(job))

    # -- feeds (SPEC 20): the Api's, as REST offers them at /feeds ---------------------------

    @unary
    def CreateFeed(self, request: struct_pb2.Struct, context: grpc.ServicerContext) -> importer_pb2.Feed:
        """Create a feed from a Struct, the body of REST's POST /feeds; the new feed, due at once."""
        return feed_message(self._api.create_feed(self._access(context), body(request)))

    @unary
    def GetFeed(self, request: importer_pb2.GetFeedRequest, context: grpc.ServicerContext) -> importer_pb2.Feed:
        """The feed with its counts of files and its latest files, if the caller may see it."""
        return feed_message(*self._api.feed_files(self._access(context), request.feed_id))

    @unary
    def ListFeeds(
        self, request: importer_pb2.ListFeedsRequest, context: grpc.ServicerContext
    ) -> importer_pb2.ListFeedsResponse:
        """The feeds the caller may see (of customer_id, unless it is ""), oldest first; limit 0: 100."""
        found = self._api.list_feeds(self._access(context), request.customer_id or None, request.limit or None)
        return importer_pb2.ListFeedsResponse(feeds=[feed_message(feed) for feed in found])

    @unary
    def UpdateFeed(self, request: importer_pb2.UpdateFeedRequest, context: grpc.ServicerContext) -> importer_pb2.Feed:
        """Pause, resume or change the feed (`changes`: the body of REST's PATCH); the feed as it now is."""
        return feed_message(self._api.update_feed(self._access(context), request.feed_id, body(request.changes)))

    @unary
    def DeleteFeed(self, request: importer_pb2.GetFeedRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        """Delete the feed and its ledger; its jobs and files stay."""
        self._api.delete_feed(self._access(context), request.feed_id)
        return empty_pb2.Empty()

    @unary
    def RunFeed(
        self, request: importer_pb2.GetFeedRequest, context: grpc.ServicerContext
    ) -> importer_pb2.RunFeedResponse:
        """Run the feed now: what the run found and enqueued, and the feed as it then is."""
        access = self._access(context)
        result = self._api.run_feed(access, request.feed_id)
        feed = feed_message(*self._api.feed_files(access, request.feed_id))
        return importer_pb2.RunFeedResponse(found=result.found, enqueued=result.enqueued, error=result.error, feed=feed)

    @unary
    def ListFeedFiles(
        self, request: importer_pb2.ListFeedFilesRequest, context: grpc.ServicerContext
    ) -> importer_pb2.ListFeedFilesResponse:
        """A page of the feed's files, newest first (state "": all; limit 0: 100; after "": the first page)."""
        access = self._access(context)
        _, files, after = self._api.list_feed_files(
            access, request.feed_id, request.state or None, request.limit or None, request.after or None
        )
        found = [json_format.ParseDict(feed_file_view(file), importer_pb2.FeedFile()) for file in files]
        return importer_pb2.ListFeedFilesResponse(files=found, next=after or "")

    @unary
    def RetryFeedFile(
        self, request: importer_pb2.RetryFeedFileRequest, context: grpc.ServicerContext
    ) -> importer_pb2.Job:
        """Import a failed file of the feed again: its new job, queued (JobConflict: it has not failed)."""
        return job_message(self._api.retry_feed_file(self._access(context), request.feed_id, request.version))


class UnaryThreads(futures.ThreadPoolExecutor):
    """The threads of the unary calls, counting the calls queued or running (streams give way to them)."""

    def __init__(self, threads: int = UNARY_THREADS) -> None:
        super().__init__(max_workers=threads, thread_name_prefix="grpc")
        self._count = threading.Lock()
        self._pending = 0

    @property
    def busy(self) -> bool:
        """Whether a unary call is queued or running."""
        return self._pending > 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        """Run fn(*args, **kwargs) in a thread, counted while pending."""

        def counted() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(-1)

        self._add(1)
        try:
            return super().submit(counted)
        except BaseException:
            self._add(-1)  # refused (shut down): it will never run
            raise

    def _add(self, step: int) -> None:
        with self._count:
            self._pending += step


@dataclass(frozen=True)
class Served:
    """A bound (not yet started) server and what a graceful stop needs."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    streams: Streams
    unary_threads: UnaryThreads

    async def shutdown(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, refuse new calls, end watches, let other calls finish."""
        await self.health.enter_graceful_shutdown()
        stopped = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # the stop has begun: new calls are refused from here on
        self.streams.stop()
        await stopped
        self.streams.close()
        self.unary_threads.shutdown(wait=False, cancel_futures=True)


async def serve(edge: Edge, address: str) -> Served:
    """Build the server with Importer, health and reflection, bound to address (inside the event loop)."""
    unary_threads = UnaryThreads()
    server = grpc.aio.server(
        migration_thread_pool=unary_threads,  # runs the servicer's plain (non-async) methods
        interceptors=(LenientDecoding(),),
        # so_reuseport off: a port another process holds is an error, not a shared port.
        options=(("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)),
    )
    streams = Streams(edge.api, give_way=lambda: unary_threads.busy)
    importer_pb2_grpc.add_ImporterServicer_to_server(ImporterServicer(edge.api, streams), server)
    checker = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"GRPC_ADDR {address!r}: cannot listen there ({exc})") from None
    return Served(server, port, checker, streams, unary_threads)


async def _start() -> tuple[Edge, Served]:
    """Read the configuration, reach the app DB, bind; ConfigError for anything wrong."""
    edge = build_edge(maxconn=UNARY_THREADS + STREAM_THREADS)
    logs.configure(edge.config.log_format, edge.config.log_level)
    return edge, await serve(edge, edge.config.grpc_addr)


async def _serve_until_stopped() -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully; 2 for a bad configuration."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        edge, served = await _start()
    except ConfigError as exc:
        print(f"grpc_server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except psycopg2.Error as exc:
        print(f"grpc_server: configuration error: cannot use the app database: {describe(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    await served.server.start()
    log.info("serving importer.Importer, health and reflection on %s", edge.config.grpc_addr)
    await stop.wait()
    log.info("stopping: finishing in-flight calls (up to %.0f s)", GRACE_SECONDS)
    await served.shutdown()
    edge.api.jobs.close()
    return EXIT_OK


def main() -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully; 2 for a bad configuration."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve_until_stopped())


if __name__ == "__main__":
    sys.exit(main())
