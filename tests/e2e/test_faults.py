"""Faults injected into real worker processes: SIGKILL at every stage, crash loops, customer
databases that are down or vanish. Nothing lost, nothing duplicated, nothing stuck."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from tests.conftest import ROOT, Databases, query, until, wait_finished
from tests.e2e.conftest import free_port
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

ROWS = 240_000  # big enough that each stage runs for a moment we can aim a SIGKILL at
SECRET = "s3cret-pw"


@dataclass
class Faults:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    products: ProductRegistry
    big_file: Path

    def enqueue(self, customer: str, path: Path) -> str:
        body = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(path)}
        job, _ = enqueue(check_request(body, self.config, self.products), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 120) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def until(self, condition: Callable[[], object], timeout: float = 60) -> None:
        until(condition, timeout, interval=0.005)

    def rows(self, customer: str, job_id: str) -> tuple[int, int]:
        (row,) = query(
            self.customers[customer],
            "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s",
            (job_id,),
        )
        return row


def write_users(path: Path, rows: int) -> Path:
    with path.open("w") as out:
        out.write("external_id,email,first_name,last_name,role,age,active,created_at\n")
        for i in range(1, rows + 1):
            out.write(f"u{i},user{i}@example.com,Zoë,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n")
    return path


@pytest.fixture(scope="module")
def faults(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    app = databases.create("app")
    customers = {"acme": databases.create("acme"), "globex": databases.create("globex")}
    dead_port = free_port()
    mapping = dict(customers, down=f"host=127.0.0.1 port={dead_port} dbname=gone user=postgres password={SECRET}")
    tmp = tmp_path_factory.mktemp("faults")
    root = tmp / "blobs"
    for name in mapping:
        (root / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(mapping))
    migrate(app)
    env = pipeline_env(
        app, tmp / "customer_map.json", root, CHUNK_ROWS="40000", CUSTOMER_DB_RETRY_SECONDS="6", WORKER_CONCURRENCY="2"
    )
    config = Config(app_db_dsn=app, blob_root=root, customers=load_customer_map(tmp / "customer_map.json"))
    jobs = JobStore(app, dispatch=dispatch)
    big = write_users(root / "acme" / "big.csv", ROWS)
    yield Faults(env, app, mapping, config, jobs, ProductRegistry.load(config.schemas_dir), big)
    jobs.close()


def start_master(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A `dramatiq actors` master with one worker process."""
    command = [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", "2"]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def start_supervisor(env: dict[str, str], output: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """`importctl worker` with one worker process (its threads: WORKER_CONCURRENCY)."""
    command = [str(Path(sys.executable).parent / "importctl"), "worker", "--processes=1"]
    return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True, stdout=output, stderr=output)


def end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stage_running(faults: Faults, job_id: str, stage: str) -> bool:
    return query(faults.app, "SELECT stage_running FROM import_jobs WHERE id = %s", (job_id,)) == [(stage,)]


def chunk_zero(faults: Faults, job_id: str) -> tuple[bool, int] | None:
    rows = query(faults.app, "SELECT running, crashes FROM import_chunks WHERE job_id = %s AND chunk_no = 0", (job_id,))
    return rows[0] if rows else None


def chunk_running(faults: Faults, job_id: str) -> bool:
    return query(faults.app, "SELECT count(*) FROM import_chunks WHERE job_id = %s AND running", (job_id,))[0][0] > 0


@pytest.mark.parametrize("stage", ["fetch", "validate", "insert"])  # fetch scans the file too
def test_a_worker_killed_mid_stage_under_importctl_worker_finishes_the_job_exactly(faults: Faults, stage: str) -> None:
    supervisor = start_supervisor(faults.env)
    try:
        job_id = faults.enqueue("acme", faults.big_file)
        if stage == "validate":
            faults.until(lambda: chunk_running(faults, job_id))
        else:
            faults.until(lambda: stage_running(faults, job_id, stage))
        # The dramatiq master runs the worker process as its child; kill that process.
        master = psutil.Process(supervisor.pid).children()[0]
        for worker in master.children():
            worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        job = faults.wait(job_id, timeout=90)
        assert job.status == "succeeded", job.error
        assert time.monotonic() - killed_at < 60
        assert (job.rows_total, job.rows_valid, job.rows_inserted) == (ROWS, ROWS, ROWS)
        assert faults.rows("acme", job_id) == (ROWS, ROWS)
    finally:
        end(supervisor)


def test_an_abandoned_chunk_is_picked_up_by_a_worker_that_was_already_running(faults: Faults) -> None:
    doomed, survivor = start_master(faults.env), start_master(faults.env)
    try:
        time.sleep(2)  # both masters have booted and listen
        job_id = faults.enqueue("acme", faults.big_file)
        faults.until(lambda: chunk_running(faults, job_id))
        for worker in psutil.Process(doomed.pid).children():
            worker.send_signal(signal.SIGKILL)
        job = faults.wait(job_id, timeout=60)  # the sweep of the survivor re-announces the chunk
        assert job.status == "succeeded", job.error
        assert faults.rows("acme", job_id) == (ROWS, ROWS)
    finally:
        end(doomed)
        end(survivor)


def test_a_chunk_that_kills_its_worker_every_time_fails_the_job_instead_of_looping(faults: Faults) -> None:
    supervisor = start_supervisor(faults.env)
    try:
        job_id = faults.enqueue("acme", faults.big_file)
        for crashes in range(3):
            # Each new attempt at chunk 0 (its crash count went up) is killed again.
            faults.until(lambda n=crashes: chunk_zero(faults, job_id) == (True, n), timeout=60)
            for master in psutil.Process(supervisor.pid).children():
                for worker in master.children():
                    worker.send_signal(signal.SIGKILL)
        job = faults.wait(job_id, timeout=90)
        assert job.status == "failed"
        assert "die 3 times" in job.error
        assert faults.rows("acme", job_id) == (0, 0)
    finally:
        end(supervisor)


def test_a_customer_db_that_is_down_fails_its_job_without_holding_up_others(faults: Faults) -> None:
    master = start_master(faults.env)
    try:
        small = write_users(faults.config.blob_root / "down" / "u.csv", 5)
        down_job = faults.enqueue("down", small)
        ok_path = write_users(faults.config.blob_root / "acme" / "small.csv", 5)
        ok_job = faults.enqueue("acme", ok_path)
        ok = faults.wait(ok_job, timeout=30)
        assert ok.status == "succeeded"
        assert not faults.jobs.get(down_job).finished  # still retrying meanwhile
        failed = faults.wait(down_job, timeout=60)
        assert failed.status == "failed"
        assert "unreachable" in failed.error and "gave up after" in failed.error
        assert SECRET not in failed.error
        logs = query(faults.app, "SELECT message FROM import_logs WHERE job_id = %s", (down_job,))
        assert all(SECRET not in m for (m,) in logs)
    finally:
        end(master)


def test_a_customer_db_dropped_mid_job_fails_the_job_cleanly(faults: Faults, databases: Databases) -> None:
    doomed_dsn = databases.create("doomed")
    mapping = dict(faults.customers, doomed=doomed_dsn)
    map_path = Path(faults.env["CUSTOMER_MAP_PATH"]).with_name("map2.json")
    map_path.write_text(json.dumps(mapping))
    env = dict(faults.env, CUSTOMER_MAP_PATH=str(map_path))
    (faults.config.blob_root / "doomed").mkdir(exist_ok=True)
    path = faults.config.blob_root / "doomed" / "big.csv"
    path.write_bytes(faults.big_file.read_bytes())
    config = faults.config.with_(customers=load_customer_map(map_path))
    master = start_master(env)
    try:
        body = {"customer_id": "doomed", "product_type": "users", "blob_uri": blob.uri_for(path)}
        job, _ = enqueue(check_request(body, config, faults.products), faults.jobs)
        faults.until(lambda: chunk_running(faults, job.id))
        databases.drop(doomed_dsn)
        failed = faults.wait(job.id, timeout=90)
        assert failed.status == "failed"
        assert "customer database" in failed.error
    finally:
        end(master)


def test_sigterm_to_the_workers_mid_job_hands_work_back_and_the_job_ends_exactly(faults: Faults) -> None:
    first = start_supervisor(faults.env, output=None)
    job_id = faults.enqueue("acme", faults.big_file)
    faults.until(lambda: chunk_running(faults, job_id))
    stopped_at = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=35) == 0
    assert time.monotonic() - stopped_at < 30
    second = start_supervisor(faults.env, output=None)
    try:
        job = faults.wait(job_id, timeout=90)
        assert job.status == "succeeded", job.error
        assert faults.rows("acme", job_id) == (ROWS, ROWS)
    finally:
        end(second)
