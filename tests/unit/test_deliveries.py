"""Webhook deliveries on threads of their own (actors.deliveries), on Dramatiq's stub broker: a
stuck delivery holds no thread of the stages, and deliveries in flight are bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.deliveries import Deliveries, DeliveryWorker

DELIVERY_THREADS = 2


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker(middleware=[])
    stub.emit_after("process_boot")
    stub.add_middleware(Deliveries("hooks", DELIVERY_THREADS, delay_prefetch=10, stop_timeout_ms=5_000))
    yield stub
    stub.close()


def test_deliveries_that_hang_leave_the_stage_threads_free_and_run_at_most_their_thread_count(
    broker: StubBroker,
) -> None:
    release, stage_ran = threading.Event(), threading.Event()
    started: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="hooks")
    def hang(n: int) -> None:
        started.append(n)
        release.wait(10)

    @dramatiq.actor(broker=broker, queue_name="stages")
    def stage() -> None:
        stage_ran.set()

    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        for n in range(20):
            hang.send(n)
        deadline = time.monotonic() + 5
        while len(started) < DELIVERY_THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        stage.send()
        assert stage_ran.wait(2), "a stage waited for hanging deliveries"
        time.sleep(0.3)
        assert len(started) == DELIVERY_THREADS  # the others wait in their queue
        assert {name.split(".")[0] for name in worker.consumers} == {"stages"}
    finally:
        release.set()
        worker.stop(timeout=5_000)


def test_a_worker_told_to_take_only_the_delivery_queue_runs_it_itself(broker: StubBroker) -> None:
    done = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="hooks")
    def deliver() -> None:
        done.set()

    worker = dramatiq.Worker(broker, queues={"hooks"}, worker_threads=1)
    worker.start()
    try:
        deliver.send()
        assert done.wait(2)
        assert not isinstance(worker, DeliveryWorker) and "hooks" in worker.consumers
    finally:
        worker.stop(timeout=5_000)
