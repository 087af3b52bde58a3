"""Dramatiq actors, one per stage: each loads its job by id and calls one core function.

`dramatiq actors` imports this package: it reads the configuration, migrates the app DB,
sets the broker and declares every actor. Actor names are stable: queued messages store them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import dramatiq
import psycopg2
from dramatiq.middleware import Middleware

from actors.broker import Every, RecoverySweep, make_broker
from actors.deliveries import Deliveries, is_delivery_worker
from actors.metrics import worker_metrics
from service import logs
from service.config import Config, load_config
from service.errors import ConfigError, ImportServiceError, Retryable
from service.logs import redact
from service.schema.products import ProductRegistry
from service.stages import cleanup, control, feeds, fetch, insert, pipeline, replay, uploads, webhooks
from service.stages import services as stages
from service.stages.messages import CHUNKS_QUEUE, JOBS_QUEUE, dispatch
from service.storage.db import app_dsn
from service.storage.jobs import JobStore, migrate
from service.storage.queue import WEBHOOKS_QUEUE

log = logging.getLogger(__name__)


def _boot() -> tuple[Config, str]:
    """Read the configuration and migrate the app DB, or stop with one clear line."""
    try:
        config = load_config()
        dsn = app_dsn(config)
        migrate(dsn)
    except ConfigError as exc:
        print(f"importctl: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # an unreachable app DB at start: one line, not a traceback
        print(f"importctl: cannot use the app database: {redact(str(exc).strip())}", file=sys.stderr)
        raise SystemExit(2) from None
    return config, dsn


def sweep_jobs() -> None:
    """Send chunks whose turn came unsent; fail unfinished jobs that no message will move on;
    finish cleanups; wake stalled publish turns; delete expired and old uploads."""
    services().jobs.take_stalled_turns()
    for job in services().jobs.orphaned_jobs(ORPHAN_AFTER_SECONDS):
        cleanup.fail_job(services(), job, "its queued work vanished (a message was lost or deleted); enqueue it again")
    cleanup.sweep_cleanups(services())
    services().jobs.wake_stalled(STALLED_TURN_SECONDS)
    uploads.sweep(services().config, services().uploads)
    global _purged_at
    if time.monotonic() - _purged_at > PURGE_EVERY_SECONDS:
        _purged_at = time.monotonic()
        cleanup.purge_history(services())


ORPHAN_AFTER_SECONDS = 60.0
STALLED_TURN_SECONDS = 10.0
PURGE_EVERY_SECONDS = 3600.0
_purged_at = time.monotonic()  # the first purge an hour after start, not in the first sweep
CONFIG, APP_DSN = _boot()
logs.reformat(CONFIG.log_format)  # dramatiq set up the handlers; the format is ours


def run_feeds() -> None:
    """Run the feeds that are due, do their after_success, raise their late alarms (SPEC 20): in
    a thread of its own, as a store's listing may take long."""
    feeds.sweep(services(), services().feeds)


broker = make_broker(
    APP_DSN,
    extra=[RecoverySweep(after_sweep=sweep_jobs), Every("feed-runs", run_feeds), *worker_metrics(CONFIG)],
)
dramatiq.set_broker(broker)

_services: stages.Services | None = None
_services_lock = threading.Lock()


def services() -> stages.Services:
    """The process's Services, built on first use (after any fork)."""
    global _services
    with _services_lock:
        if _services is None:
            jobs = JobStore(
                APP_DSN,
                dispatch=dispatch,
                maxconn=CONFIG.worker_concurrency,  # kept idle at most: one per thread
                chunk_stage=stages.VALIDATE,
                chunks_in_flight=CONFIG.chunks_in_flight,
            )
            products = ProductRegistry.load(CONFIG.schemas_dir)
            _services = stages.Services(CONFIG, jobs, products, APP_DSN)
        return _services


# Retry policy lives on the actors: transient faults (an unreachable database) back off and
# retry, an unreachable customer DB for up to customer_db_retry_seconds (the stage then fails
# the job itself); anything unexpected gets two more tries, then the dead-letter middleware
# below fails the job with the reason.
TRANSIENT_RETRIES, UNEXPECTED_RETRIES = 30, 2


def should_retry(retries: int, exception: BaseException) -> bool:
    """Retry transient faults many times, unexpected ones twice."""
    transient = isinstance(exception, Retryable | psycopg2.OperationalError | psycopg2.InterfaceError)
    return retries < (TRANSIENT_RETRIES if transient else UNEXPECTED_RETRIES)


RETRY: dict[str, Any] = {"retry_when": should_retry, "min_backoff": 500, "max_backoff": 10_000}
# A worker process runs its prefetched messages lowest number first: a job's own stages
# (a small job's fetch, parse and publish) before chunks of big jobs already waiting there.
CHUNK_PRIORITY = 10


@dramatiq.actor(actor_name=stages.FETCH, queue_name=JOBS_QUEUE, time_limit=600_000, **RETRY)
def import_fetch(job_id: str) -> None:
    """Locate the blob, detect format and header, prepare the customer DB."""
    pipeline.run_stage(services(), fetch.fetch, job_id)


@dramatiq.actor(actor_name=stages.PARSE, queue_name=JOBS_QUEUE, time_limit=3_600_000, **RETRY)
def import_parse(job_id: str) -> None:
    """Scan the file and cut it into chunks."""
    pipeline.run_stage(services(), fetch.parse, job_id)


@dramatiq.actor(
    actor_name=stages.VALIDATE,
    queue_name=CHUNKS_QUEUE,
    time_limit=stages.CHUNK_TIME_LIMIT_SECONDS * 1000,
    priority=CHUNK_PRIORITY,
    **RETRY,
)
def import_validate(job_id: str, chunk_no: int) -> None:
    """Validate one chunk and write (or stage, for an atomic job) its valid rows."""
    pipeline.run_chunk(services(), job_id, chunk_no)


@dramatiq.actor(actor_name=stages.INSERT, queue_name=JOBS_QUEUE, time_limit=3_600_000, **RETRY)
def import_insert(job_id: str) -> None:
    """Close the job: check a streaming job's rows, or publish an atomic job's in one commit."""
    pipeline.run_stage(services(), insert.insert, job_id)


@dramatiq.actor(actor_name=stages.UNDO, queue_name=JOBS_QUEUE, time_limit=3_600_000, **RETRY)
def import_undo(job_id: str) -> None:
    """Finish a big undo in one transaction of the customer DB."""
    control.finish_undo(services(), job_id)


@dramatiq.actor(actor_name=stages.REPLAY, queue_name=JOBS_QUEUE, time_limit=600_000, **RETRY)
def import_replay(job_id: str) -> None:
    """Plan a replay job from the stored rejects of the job it replays."""
    pipeline.run_stage(services(), replay.replay, job_id)


@dramatiq.actor(actor_name=stages.DISCARD, queue_name=JOBS_QUEUE, time_limit=3_600_000, **RETRY)
def import_discard(job_id: str) -> None:
    """Delete what a cancelled job left in the customer database."""
    cleanup.discard_cancelled(services(), job_id)


@dramatiq.actor(actor_name=webhooks.DELIVER, queue_name=WEBHOOKS_QUEUE, time_limit=120_000, **RETRY)
def deliver_webhook(job_id: str, status: str, attempt: int = 1, first_at: float | None = None) -> None:
    """POST the ended job's view to its callback_url; log the attempt, queue the next one if it failed.

    It runs on the webhook threads (actors.deliveries), never on those of the stages. An
    attempt holds its thread at most webhooks.TIMEOUT_SECONDS; the retries (backoff up to an
    hour, for webhook_give_up_seconds) are delayed messages, not a sleeping thread. Raising
    here (the app DB is down) retries the same attempt under RETRY."""
    webhooks.deliver(services().jobs, CONFIG, job_id, status, attempt, first_at)


@dramatiq.actor(actor_name=webhooks.DELIVER_FEED, queue_name=WEBHOOKS_QUEUE, time_limit=120_000, **RETRY)
def deliver_feed_event(feed_id: str, event: str, attempt: int = 1, first_at: float | None = None) -> None:
    """POST a feed's event (feed.late) to the feed's callback_url option, as deliver_webhook does a job's end."""
    webhooks.deliver_feed_event(services().feeds, CONFIG, feed_id, event, attempt, first_at)


class FailJobOnDeadLetter(Middleware):
    """A message Dramatiq gives up on ends its job `failed` with the reason, never stuck."""

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self._fail(message, "gave up")

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._fail(message, "skipped")

    def _fail(self, message: Any, how: str) -> None:
        if not message.args or message.actor_name in (webhooks.DELIVER, webhooks.DELIVER_FEED):
            return  # a webhook never fails its (ended) job; a feed's event has no job
        job_id = str(message.args[0])
        exc = getattr(message, "_exception", None)
        # The job's error is read by the customer: our own errors are written for them; a
        # driver's or Python's text (hosts, ports, users) goes to this log only (SPEC 14).
        if isinstance(exc, ImportServiceError):
            reason = str(exc)
        else:
            reason = type(exc).__name__ if exc is not None else "no reason recorded"
            log.error("job %s: stage %s %s after retries: %s", job_id, message.actor_name, how, redact(repr(exc)))
        error = f"internal error in stage {message.actor_name} ({how} after retries): {redact(reason)}"
        try:
            if message.actor_name == stages.UNDO:
                # The job stays succeeded, its rows as they were (the undo is one transaction).
                services().jobs.end_undo_request(job_id, f"undo did not complete: {error}")
                return
            job = services().jobs.get(job_id)
            if job is not None and not job.finished:
                cleanup.fail_job(services(), job, error)
        except ImportServiceError as e:
            log.error("job %s: could not record failure: %s", job_id, e)


DELAY_PREFETCH = 256


class WorkerConcurrency(Middleware):
    """`dramatiq actors` runs WORKER_CONCURRENCY threads per process (SPEC section 4)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if is_delivery_worker(worker):
            return  # its threads are webhook_concurrency (actors.deliveries)
        worker.worker_threads = CONFIG.worker_concurrency
        # A delayed message (a retry's eta: webhooks wait up to an hour) stays claimed, with
        # its advisory lock, in the process that fetched it; Dramatiq's default of 1000 per
        # thread could exhaust Postgres's lock table when an endpoint is down for many jobs.
        # Beyond this many per delay queue, delayed messages wait unclaimed in the queue table.
        worker.delay_prefetch = min(worker.delay_prefetch, DELAY_PREFETCH)


broker.add_middleware(FailJobOnDeadLetter())
broker.add_middleware(WorkerConcurrency())
broker.add_middleware(Deliveries(WEBHOOKS_QUEUE, CONFIG.webhook_concurrency, DELAY_PREFETCH))
logging.getLogger("dramatiq_pg").setLevel(logging.WARNING)
