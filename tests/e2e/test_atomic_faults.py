"""Atomic jobs (upsert, replace) under faults, through `importctl worker` and real databases:
SIGKILL while staging and while publishing, readers polling the table meanwhile, cancel at
every stage. The table is always either as it was or as the job leaves it, never a mix."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import control
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.jobs import Job, JobStore, migrate
from tests.conftest import Databases, query, until, wait_finished
from tests.e2e.test_faults import chunk_running, end, stage_running, start_supervisor
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

ROWS = 200_000
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
CUSTOMERS = ("k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10")


def write(path: Path, rows: int, changed_every: int = 0) -> Path:
    """A users CSV; with changed_every=n, every n-th row's first_name is 'New'."""
    with path.open("w") as out:
        out.write(HEADER)
        for i in range(1, rows + 1):
            name = "New" if changed_every and i % changed_every == 0 else "Old"
            out.write(f"u{i},user{i}@example.com,{name},Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n")
    return path


@dataclass
class Stand:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    services: Services
    base: Path
    changed: Path
    smaller: Path

    def enqueue(self, customer: str, path: Path, mode: str) -> str:
        own = self.config.blob_root / customer / path.name
        if not own.exists():
            os.link(path, own)  # a hard link: a symlink out of the blob area is refused
        body = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(own)}
        body["options"] = {"mode": mode}
        job, _ = enqueue(check_request(body, self.config, self.services.products), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 120) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def until(self, condition: Callable[[], object], timeout: float = 60) -> None:
        until(condition, timeout, interval=0.005)

    def state(self, customer: str) -> tuple[int, int, int]:
        """(rows, distinct keys, rows named 'New') of the customer's users table."""
        (row,) = query(
            self.customers[customer],
            "SELECT count(*), count(DISTINCT data->>'external_id'), "
            "count(*) FILTER (WHERE data->>'first_name' = 'New') FROM users",
        )
        return row

    def stages_left(self, customer: str) -> int:
        sql = "SELECT count(*) FROM pg_tables WHERE schemaname = 'import_service' AND tablename LIKE 'stage_%%'"
        return int(query(self.customers[customer], sql)[0][0])


@pytest.fixture(scope="module")
def stand(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    app = databases.create("app")
    customers = {name: databases.create(name) for name in CUSTOMERS}
    tmp = tmp_path_factory.mktemp("atomic")
    root = tmp / "blobs"
    files = tmp / "files"
    files.mkdir()
    for name in customers:
        (root / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(customers))
    migrate(app)
    env = pipeline_env(app, tmp / "customer_map.json", root, CHUNK_ROWS="20000", WORKER_CONCURRENCY="2")
    config = Config(app_db_dsn=app, blob_root=root.resolve(), customers=load_customer_map(tmp / "customer_map.json"))
    jobs = JobStore(app, dispatch=dispatch)
    services = Services(config, jobs, ProductRegistry.load(config.schemas_dir), app)
    yield Stand(
        env,
        app,
        customers,
        config,
        jobs,
        services,
        write(files / "base.csv", ROWS),
        write(files / "changed.csv", ROWS, changed_every=10),
        write(files / "smaller.csv", ROWS * 3 // 4, changed_every=5),
    )
    jobs.close()


@pytest.fixture(scope="module")
def workers(stand: Stand) -> Iterator[object]:
    supervisor = start_supervisor(stand.env)
    yield supervisor
    end(supervisor)


def load_base(stand: Stand, customer: str) -> Job:
    job = stand.wait(stand.enqueue(customer, stand.base, "upsert"))
    assert job.status == "succeeded", job.error
    assert stand.state(customer) == (ROWS, ROWS, 0)
    return job


def kill_workers(supervisor: object) -> None:
    for master in psutil.Process(supervisor.pid).children():  # type: ignore[attr-defined]
        for worker in master.children():
            worker.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("when", ["staging", "publishing"])
def test_a_worker_killed_during_an_upsert_ends_with_the_exact_table(stand: Stand, workers: object, when: str) -> None:
    customer = "k1" if when == "staging" else "k2"
    load_base(stand, customer)
    job_id = stand.enqueue(customer, stand.changed, "upsert")
    if when == "staging":
        stand.until(lambda: chunk_running(stand, job_id))  # type: ignore[arg-type]
    else:
        stand.until(lambda: stage_running(stand, job_id, "insert"))  # type: ignore[arg-type]
    kill_workers(workers)
    killed_at = time.monotonic()
    job = stand.wait(job_id)
    assert job.status == "succeeded", job.error
    assert time.monotonic() - killed_at < 60
    changed = ROWS // 10
    assert (job.rows_inserted, job.rows_updated, job.rows_unchanged, job.rows_duplicate) == (
        0,
        changed,
        ROWS - changed,
        0,
    )
    assert stand.state(customer) == (ROWS, ROWS, changed)
    assert stand.stages_left(customer) == 0


@pytest.mark.parametrize("mode", ["upsert", "replace"])
def test_a_reader_polling_during_an_atomic_job_sees_the_table_before_or_after_never_between(
    stand: Stand, workers: object, mode: str
) -> None:
    customer = "k3" if mode == "upsert" else "k4"
    load_base(stand, customer)
    seen: set[tuple[int, int, int]] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.add(stand.state(customer))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        job = stand.wait(stand.enqueue(customer, stand.changed if mode == "upsert" else stand.smaller, mode))
    finally:
        stop.set()
        reader.join()
    assert job.status == "succeeded", job.error
    before = (ROWS, ROWS, 0)
    after = (ROWS, ROWS, ROWS // 10) if mode == "upsert" else (ROWS * 3 // 4, ROWS * 3 // 4, ROWS * 3 // 4 // 5)
    assert stand.state(customer) == after
    assert seen <= {before, after} and before in seen, seen
    if mode == "replace":
        assert job.rows_deleted == ROWS // 4


@pytest.mark.parametrize("when", ["fetch", "validate", "publish"])  # fetch scans the file too
def test_a_cancelled_atomic_job_stops_at_once_and_changes_nothing(stand: Stand, workers: object, when: str) -> None:
    customer = {"fetch": "k5", "validate": "k6", "publish": "k7"}[when]
    load_base(stand, customer)
    job_id = stand.enqueue(customer, stand.changed, "replace")
    if when == "fetch":
        stand.until(lambda: stage_running(stand, job_id, "fetch"))  # type: ignore[arg-type]
    elif when == "validate":
        stand.until(lambda: chunk_running(stand, job_id))  # type: ignore[arg-type]
    else:
        stand.until(lambda: stage_running(stand, job_id, "insert"))  # type: ignore[arg-type]
    job, complete = control.cancel(stand.services, stand.jobs.get(job_id))
    cancelled_at = time.monotonic()
    assert complete and job.status == "cancelled"
    # Within 10 s nothing of the job runs any more and nothing of it is left.
    stand.until(lambda: stand.stages_left(customer) == 0 and not chunk_running(stand, job_id), timeout=10)  # type: ignore[arg-type]
    assert time.monotonic() - cancelled_at < 10
    assert stand.state(customer) == (ROWS, ROWS, 0)
    queued = query(
        stand.app,
        "SELECT count(*) FROM dramatiq.queue WHERE state = 'queued' AND message->'args'->>0 = %s "
        "AND message->>'actor_name' <> 'import_discard'",
        (job_id,),
    )
    assert queued == [(0,)]
    assert stand.jobs.get(job_id).status == "cancelled"
    # The workers move on: the next job of the same customer and product runs at once.
    after = stand.wait(stand.enqueue(customer, stand.changed, "upsert"))
    assert after.status == "succeeded" and after.rows_updated == ROWS // 10


def test_a_big_undo_is_handed_to_a_worker_and_restores_the_table(stand: Stand, workers: object) -> None:
    job = load_base(stand, "k8")
    assert job.rows_inserted == ROWS > control.UNDO_INLINE_ROWS
    handed, complete = control.undo(stand.services, job)
    assert not complete and handed.status == "succeeded" and handed.undo_pending
    stand.until(lambda: stand.jobs.get(job.id).status == "undone", timeout=60)
    assert stand.jobs.get(job.id).undone_at is not None
    assert stand.state("k8") == (0, 0, 0)


def test_a_cancelled_streaming_append_leaves_none_of_its_rows(stand: Stand, workers: object) -> None:
    job_id = stand.enqueue("k9", stand.base, "append")
    stand.until(lambda: chunk_running(stand, job_id))  # type: ignore[arg-type]
    stand.until(lambda: stand.state("k9")[0] > 0)  # some chunks have committed their rows
    job, complete = control.cancel(stand.services, stand.jobs.get(job_id))
    assert complete and job.status == "cancelled"
    stand.until(lambda: stand.state("k9") == (0, 0, 0) and not chunk_running(stand, job_id), timeout=10)  # type: ignore[arg-type]
    time.sleep(2)  # a chunk that was in flight has ended and deleted its own rows by now
    assert stand.state("k9") == (0, 0, 0)


def test_a_chunk_rerun_after_kill_9_stores_each_reject_once(stand: Stand, workers: object) -> None:
    path = stand.config.blob_root / "k10" / "invalid.csv"
    with path.open("w") as out:
        out.write(HEADER)
        for i in range(1, ROWS + 1):
            email = "broken" if i % 10 == 0 else f"user{i}@example.com"
            out.write(f"u{i},{email},Old,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n")
    job_id = stand.enqueue("k10", path, "upsert")
    stand.until(lambda: chunk_running(stand, job_id))  # type: ignore[arg-type]
    kill_workers(workers)
    job = stand.wait(job_id)
    assert job.status == "succeeded", job.error
    assert (job.rows_valid, job.rows_invalid) == (ROWS - ROWS // 10, ROWS // 10)
    (stored,) = query(
        stand.customers["k10"],
        "SELECT count(*), count(DISTINCT source_row), min(source_row), max(source_row) "
        "FROM import_service.rejects WHERE job_id = %s",
        (job_id,),
    )
    assert stored == (ROWS // 10, ROWS // 10, 10, ROWS)
