"""The Dramatiq broker: dramatiq-pg on the app DB, with the fixes ../shared/notes/dramatiq-pg.md calls for."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq_pg import PostgresBroker
from dramatiq_pg.broker import QUERIES, PostgresConsumer
from dramatiq_pg.utils import raise_connection_error, tidy4json, transaction
from psycopg2.extras import Json

from actors.deliveries import is_delivery_worker
from service.logs import redact

log = logging.getLogger(__name__)

# Each declared queue costs a worker process 4 connections (listen + consume, queue and
# delay queue); acks and enqueues need more on top, one per worker thread at worst.
# dramatiq-pg keeps up to minconn of them idle (opened lazily; its default is maxconn): with
# minconn=0 every consume and ack opened a new connection, about 2 ms of server time each.
BROKER_MAXCONN = 32
BROKER_IDLE = 4


class Consumer(PostgresConsumer):
    """dramatiq-pg's consumer with two of its measured bugs fixed."""

    def __next__(self) -> Any:
        # Locks of acked messages are otherwise released only when idle: under a backlog
        # they pile up until Postgres runs out of lock memory.
        self.purge_locks()
        if len(self.in_processing) < self.prefetch:
            # The released consumer never resets its backoff counter, so after a few full
            # windows every poll sleeps up to a second.
            self.misses = 0
        return super().__next__()

    @raise_connection_error
    def ack(self, message: Any) -> None:
        self._finish(message, QUERIES.ACK)

    @raise_connection_error
    def nack(self, message: Any) -> None:
        self._finish(message, QUERIES.NACK)

    def _finish(self, message: Any, query: str) -> None:
        """Ack or nack as dramatiq-pg does, but free the message's lock only after the commit.

        The released code queues the unlock before its UPDATE commits; with locks released on
        every iteration, another worker could then claim a message that is being acked.
        """
        channel = f"dramatiq.{message.queue_name}.ack"
        with transaction(self.pool) as curs:
            params = (Json(tidy4json(message)), message.message_id, message.queue_name, channel, message.message_id)
            curs.execute(query, params)
        self.unlock_q.put_nowait(message)
        self.in_processing.discard(message.message_id)


class Broker(PostgresBroker):
    """PostgresBroker that hands out the fixed consumer."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        return Consumer(pool=self.pool, queue_name=queue_name, prefetch=prefetch, timeout=timeout)


# A message still `queued` or `consumed` this long after its last change is announced again.
# If its worker is alive, its session's advisory lock makes every other claim fail, so the
# repeat is harmless; if the worker died, the lock died with it and another worker runs it.
SWEEP_EVERY_SECONDS = 10.0
ABANDONED_AFTER_SECONDS = 10.0
RENOTIFY = """
SELECT pg_notify('dramatiq.' || queue_name || '.enqueue',
                 CASE WHEN octet_length(message::text) >= 8000
                      THEN jsonb_build_object('message_id', message_id)::text
                      ELSE message::text END)
FROM dramatiq.queue
WHERE state IN ('queued', 'consumed')
  AND mtime < (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)
"""


# Acked messages are deleted after a minute (the job tables keep the history); dead letters
# stay a week for inspection. dramatiq-pg itself purges only at random when idle.
PURGE = """
DELETE FROM dramatiq.queue
WHERE (state = 'done' AND mtime < (now() AT TIME ZONE 'UTC') - interval '60 seconds')
   OR (state = 'rejected' AND mtime < (now() AT TIME ZONE 'UTC') - interval '7 days')
"""


class Every(Middleware):
    """Call `task` every `every` seconds (jittered, so that many worker processes do not run it
    in step) in a thread of its own in each worker process (not the delivery workers'), from its
    boot to its shutdown; a failure is logged, and the next round goes on."""

    def __init__(self, name: str, task: Callable[[], object], every: float = SWEEP_EVERY_SECONDS) -> None:
        self.name, self.task, self.every = name, task, every
        self._stop = threading.Event()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not is_delivery_worker(worker):
            threading.Thread(target=self._loop, name=self.name.replace(" ", "-"), daemon=True).start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if not is_delivery_worker(worker):
            self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every * random.uniform(0.75, 1.25)):
            try:
                self.task()
            except Exception as exc:  # never kills its thread; the next round retries
                log.warning("%s failed: %s", self.name, redact(str(exc).strip()))


class RecoverySweep(Every):
    """Re-announce abandoned messages while workers run (dramatiq-pg looks only at start-up
    and at random, minutes apart), so a job survives a SIGKILLed worker within about 20 s;
    purge finished messages; then call `after_sweep` (which fails jobs whose work vanished).
    Work that may wait long on a store (a feed's listing) runs in an Every of its own, so that
    it never holds this up."""

    def __init__(
        self,
        after_sweep: Callable[[], None] | None = None,
        every: float = SWEEP_EVERY_SECONDS,
        after: float = ABANDONED_AFTER_SECONDS,
    ) -> None:
        super().__init__("recovery sweep", self._round, every)
        self.after_sweep, self.after = after_sweep, after
        self._broker: Any = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._broker = broker  # one sweep per process, for every queue
        super().after_worker_boot(broker, worker)

    def _round(self) -> None:
        self.sweep(self._broker)
        if self.after_sweep is not None:
            self.after_sweep()

    def sweep(self, broker: Any) -> int:
        """Announce every stale queued/consumed message again; return how many."""
        with transaction(broker.pool) as curs:
            curs.execute(RENOTIFY, (self.after,))
            announced = curs.rowcount
            curs.execute(PURGE)
        return announced


def make_broker(dsn: str, extra: Sequence[Middleware] = ()) -> Broker:
    """A broker on the app DB; results off (status lives in import_jobs), explicit middleware."""
    separator = "&" if "?" in dsn else "?"
    url = f"{dsn}{separator}maxconn={BROKER_MAXCONN}&minconn={BROKER_IDLE}" if "://" in dsn else None
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
        *extra,
    ]
    if url is None:
        # A key=value DSN: dramatiq-pg only takes URLs, so build its pool from our DSN.
        import psycopg2.extensions
        from dramatiq_pg.utils import make_pool

        kwargs = dict(psycopg2.extensions.parse_dsn(dsn), maxconn=BROKER_MAXCONN, minconn=BROKER_IDLE)
        return Broker(pool=make_pool(kwargs), results=False, middleware=middleware)
    return Broker(url=url, results=False, middleware=middleware)
