"""Webhook deliveries on threads of their own (SPEC 16): a dead endpoint holds no thread that a
fetch, a chunk or a publish needs.

Dramatiq runs every queue a Worker consumes on that Worker's one pool of threads, so a queue
of its own is not enough: each worker process also runs a second, small Worker that consumes
only the webhook queue, with `webhook_concurrency` threads, and the process's main Worker is
told to leave that queue alone. A delivery stays an ordinary message, acked only once its
attempt is logged (at least once, even if the process dies mid-POST). The price is one queue
more: 4 persistent app-DB connections per worker process (LISTEN and consume, for the queue
and its delay queue), where a pool of threads without a queue would have lost the message of
a POST in flight when its process died, and deferring over the shared queue would still hold
one of its threads per delivery in flight.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)


class DeliveryWorker(dramatiq.Worker):  # type: ignore[misc]  # dramatiq is untyped
    """The second Worker of a process: the webhook queue only. Other middleware skips it."""


def is_delivery_worker(worker: Any) -> bool:
    """Whether `worker` is a process's webhook Worker (not the one that runs the stages)."""
    return isinstance(worker, DeliveryWorker)


class _SameTypeTwice(logging.Filter):
    """Hides the broker's warning that a second Worker adds a second _WorkerMiddleware: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "same type twice" not in record.getMessage()


class Deliveries(Middleware):
    """Start a DeliveryWorker beside each main Worker, keep the main one off its queue, stop
    it with the main one. Without a main Worker taking the queue (an operator's --queues that
    leaves it out, or names it alone) nothing changes: that process runs what it was given."""

    def __init__(self, queue: str, threads: int, delay_prefetch: int, stop_timeout_ms: int = 20_000) -> None:
        self.queue, self.threads, self.delay_prefetch = queue, threads, delay_prefetch
        self.stop_timeout_ms = stop_timeout_ms
        self._workers: dict[int, DeliveryWorker] = {}  # id(main Worker) -> its DeliveryWorker
        self._stopping: dict[int, threading.Thread] = {}

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if is_delivery_worker(worker):
            return
        given = set(worker.consumer_whitelist or broker.get_declared_queues())
        if self.queue in given and given != {self.queue}:
            worker.consumer_whitelist = given - {self.queue}
            worker.deliveries_apart = True

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if not getattr(worker, "deliveries_apart", False):
            return
        deliveries = DeliveryWorker(broker, queues={self.queue}, worker_threads=self.threads)
        # Claim no more than the threads can run, so that idle processes take the rest.
        deliveries.queue_prefetch = self.threads
        deliveries.delay_prefetch = min(deliveries.delay_prefetch, self.delay_prefetch)
        self._workers[id(worker)] = deliveries
        quiet = _SameTypeTwice()
        broker.logger.addFilter(quiet)
        try:
            deliveries.start()
        finally:
            broker.logger.removeFilter(quiet)
        log.info("webhook deliveries: %d thread(s) on queue %s", self.threads, self.queue)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        deliveries = self._workers.pop(id(worker), None)
        if deliveries is None:
            return
        # Both Workers finish their messages at the same time, not one after the other.
        stopping = threading.Thread(
            target=deliveries.stop, args=(self.stop_timeout_ms,), name="stop-deliveries", daemon=True
        )
        stopping.start()
        self._stopping[id(worker)] = stopping

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        stopping = self._stopping.pop(id(worker), None)
        if stopping is not None:
            stopping.join(self.stop_timeout_ms / 1000)
