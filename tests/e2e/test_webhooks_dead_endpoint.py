"""A dead webhook endpoint and everyone else (SPEC 16, issue 18 point 6): deliveries run on
threads of their own, so 200 of them hanging on one customer's endpoint do not delay another
customer's small job. Real gunicorn, a real `dramatiq actors` process, real Postgres."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from service.config import Config
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import JobStore
from tests.conftest import Databases, query, until
from tests.e2e.test_webhooks import SECRET, Env, call, start_env, wait_status

DEAD_DELIVERIES = 200
SMALL_JOB_SECONDS = 2.0
WEBHOOK_THREADS = Config().webhook_concurrency  # per worker process; the stack runs one


@dataclass
class Hanging:
    """A TCP endpoint that takes every request and never answers; it counts the connections
    open at once (a delivery's attempt closes its own at its 10 s deadline)."""

    base: str = ""
    accepted: int = 0
    open: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted, self.open = self.accepted + 1, self.open + 1
            self.peak = max(self.peak, self.open)
        with conn:
            while conn.recv(65536):
                pass  # read the request, answer nothing, until the client gives up
        with self.lock:
            self.open -= 1


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    state = Hanging(f"http://127.0.0.1:{server.getsockname()[1]}")

    def accept() -> None:
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            threading.Thread(target=state.hold, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield state
    server.close()


@pytest.fixture
def dead_env(databases: Databases, tmp_path_factory: pytest.TempPathFactory, hanging: Hanging) -> Iterator[Env]:
    """acme calls back the hanging endpoint; globex has no webhooks."""
    acme = {"webhook_prefixes": [f"{hanging.base}/hooks/"], "webhook_secret": SECRET, "allow_private_hosts": True}
    yield from start_env(databases, tmp_path_factory.mktemp("dead"), {"acme": acme, "globex": {}})


def end_jobs_with_a_dead_callback(env: Env, url: str, count: int) -> None:
    """Enqueue `count` acme jobs whose first message no worker reads, then cancel each through
    REST: every cancel commits the job's end with a delivery message, as any job's end does."""
    products = ProductRegistry.load(env.config.schemas_dir)
    held = lambda actor, args: ("held", *dispatch(actor, args)[1:])  # noqa: E731  (no worker reads "held")
    jobs = JobStore(env.stack.app_dsn, dispatch=held, maxconn=1)
    try:
        ids = []
        for _ in range(count):
            path = env.stack.blob("acme", f"{uuid.uuid4().hex[:8]}.csv")
            body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
            request = check_request({**body, "options": {"callback_url": url}}, env.config, products)
            ids.append(enqueue(request, jobs)[0].id)
    finally:
        jobs.close()
    with ThreadPoolExecutor(8) as pool:  # quickly: the first deliveries end 10 s after they start
        statuses = list(pool.map(lambda job_id: call(env, "POST", f"/jobs/{job_id}/cancel")[0], ids))
    assert statuses == [200] * count


def pending_deliveries(env: Env) -> int:
    """Delivery messages queued or taken, on whichever queue."""
    return int(
        query(
            env.stack.app_dsn,
            "SELECT count(*) FROM dramatiq.queue WHERE message->>'actor_name' = 'deliver_webhook' "
            "AND state IN ('queued', 'consumed')",
        )[0][0]
    )


def test_200_deliveries_to_an_endpoint_that_hangs_do_not_delay_another_customers_small_job(
    dead_env: Env, hanging: Hanging
) -> None:
    # One `dramatiq actors` process with 2 threads, as every e2e stack here. Before deliveries
    # had threads of their own, both were held 10 s per attempt and the small job waited.
    end_jobs_with_a_dead_callback(dead_env, f"{hanging.base}/hooks/dead", DEAD_DELIVERIES)
    # As many hang as the stack has threads for the stages (2): before the fix, all of them.
    until(lambda: hanging.open >= 2, timeout=30, interval=0.05)
    assert pending_deliveries(dead_env) >= DEAD_DELIVERIES - 2 * WEBHOOK_THREADS

    started = time.monotonic()
    path = dead_env.stack.blob("globex", f"{uuid.uuid4().hex[:8]}.csv")
    body = {"customer_id": "globex", "product_type": "users", "blob_uri": blob.uri_for(path)}
    status, answer = call(dead_env, "POST", "/enqueue", body)
    assert status == 202, answer
    view = wait_status(dead_env, answer["job_id"], ("succeeded", "failed"), timeout=30)
    took = time.monotonic() - started
    assert view["status"] == "succeeded" and took < SMALL_JOB_SECONDS, f"the small job took {took:.2f} s"
    assert hanging.peak == WEBHOOK_THREADS  # deliveries in flight: all the webhook threads, no more
    assert pending_deliveries(dead_env) > DEAD_DELIVERIES // 2  # most still wait their turn
