"""A real pipeline for integration tests: fresh app and customer databases, a blob area,
and real `dramatiq actors` worker processes reading the same configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.config import SETTINGS, Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import JOBS_QUEUE, dispatch
from service.storage.jobs import Job, JobStore, migrate
from tests.conftest import ROOT, Databases

JOB_TIMEOUT = 60.0
HELD_QUEUE = "held"


@dataclass
class Pipeline:
    """Everything a test needs to run jobs through real workers and inspect both databases."""

    config: Config
    jobs: JobStore
    products: ProductRegistry
    app_dsn: str
    customer_dsns: dict[str, str]
    env: dict[str, str]
    workers_pid: int = 0  # the `dramatiq actors` master
    workers: Any = None  # its Popen, for restart_workers

    def restart_workers(self) -> None:
        """Stop the workers and start new ones (they read the schemas again, as after a deploy)."""
        stop_workers(self.workers)
        self.workers = start_workers(self.env)
        self.workers_pid = self.workers.pid

    def put(self, customer: str, name: str, content: bytes) -> Path:
        """Write a blob into the customer's area."""
        path = self.config.blob_root / customer / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def enqueue(self, customer: str, product: str, path: Path, options: dict[str, Any] | None = None) -> Job:
        """Enqueue a job as the edges do."""
        body: dict[str, Any] = {"customer_id": customer, "product_type": product, "blob_uri": blob.uri_for(path)}
        if options is not None:
            body["options"] = options
        job, _ = enqueue(check_request(body, self.config, self.products), self.jobs)
        return job

    def enqueue_held(self, customer: str, product: str, path: Path) -> Job:
        """Enqueue with the first message parked in a queue no worker reads (see `release`)."""

        def held(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
            _, message_id, message = dispatch(actor_name, args)
            return HELD_QUEUE, message_id, dict(message, queue_name=HELD_QUEUE)

        jobs = JobStore(self.app_dsn, dispatch=held, maxconn=1)
        try:
            body = {"customer_id": customer, "product_type": product, "blob_uri": blob.uri_for(path)}
            job, _ = enqueue(check_request(body, self.config, self.products), jobs)
        finally:
            jobs.close()
        return job

    def release(self) -> None:
        """Move parked messages to their real queue and announce them to the workers."""
        with self.jobs.transaction() as cur:
            cur.execute(
                "UPDATE dramatiq.queue SET queue_name = %s, message = jsonb_set(message, '{queue_name}', to_jsonb(%s::text)) "
                "WHERE queue_name = %s RETURNING message::text AS message",
                (JOBS_QUEUE, JOBS_QUEUE, HELD_QUEUE),
            )
            for row in cur.fetchall():  # NOTIFY is delivered at commit, with the moved rows
                cur.execute("SELECT pg_notify(%s, %s)", (f"dramatiq.{JOBS_QUEUE}.enqueue", row["message"]))

    def wait(self, job_id: str, timeout: float = JOB_TIMEOUT) -> Job:
        """Wait for the job to end (polling its row; the workers are other processes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.jobs.get(job_id)
            assert job is not None
            if job.finished:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish within {timeout} s: {self.jobs.get(job_id)}")

    def run(self, customer: str, product: str, name: str, content: bytes, options: dict[str, Any] | None = None) -> Job:
        """Put a file, enqueue it, wait for the job to end."""
        path = self.put(customer, f"{uuid.uuid4().hex[:8]}-{name}", content)
        return self.wait(self.enqueue(customer, product, path, options).id)


def start_workers(env: dict[str, str], processes: int = 1, threads: int = 2) -> subprocess.Popen[bytes]:
    """Start real `dramatiq actors` processes with this environment."""
    command = [sys.executable, "-m", "dramatiq", "actors", "--processes", str(processes), "--threads", str(threads)]
    return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)


def stop_workers(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the dramatiq master and wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def pipeline_env(app_dsn: str, map_path: Path, blob_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker or CLI process pointed at the test databases. The workers'
    metrics server is off (many pools run at once here) unless extra turns it on."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CONFIG_ENV")}
    env.update(APP_DB_DSN=app_dsn, CUSTOMER_MAP_PATH=str(map_path), BLOB_ROOT=str(blob_root), WORKER_METRICS_ADDR="off")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Fresh databases, a blob root and one `dramatiq actors` process (2 threads) for a test module."""
    yield from make_pipeline(databases, tmp_path_factory, ["acme", "globex"])


def make_pipeline(
    databases: Databases,
    tmp_path_factory: pytest.TempPathFactory,
    names: list[str],
    schemas_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Iterator[Pipeline]:
    """A Pipeline whose customers (each with a fresh database) are `names` (and products, schemas_dir's).

    overrides: settings by their config name, for the workers (their environment) and this process alike."""
    app = databases.create("app")
    customers = {name: databases.create(name) for name in names}
    root = tmp_path_factory.mktemp("blobs")
    map_path = root.parent / "customer_map.json"
    import json

    map_path.write_text(json.dumps(customers))
    migrate(app)
    settings = {"CHUNK_ROWS": "3", "MAX_LOGGED_ERRORS": "5", "WORKER_CONCURRENCY": "2"}
    if schemas_dir is not None:
        settings["SCHEMAS_DIR"] = str(schemas_dir)
    config = Config(
        schemas_dir=schemas_dir or Config().schemas_dir,
        app_db_dsn=app,
        blob_root=root.resolve(),
        customer_map_path=map_path,
        customers=load_customer_map(map_path),
        chunk_rows=3,
        max_logged_errors=5,
        worker_concurrency=2,
    )
    by_name = {setting.key: setting.env for setting in SETTINGS}
    settings.update({by_name[name]: str(value) for name, value in (overrides or {}).items()})
    config = config.with_(**(overrides or {}))
    env = pipeline_env(app, map_path, root, **settings)
    jobs = JobStore(app, dispatch=dispatch, chunks_in_flight=config.chunks_in_flight)
    workers = start_workers(env)
    pipeline = Pipeline(
        config, jobs, ProductRegistry.load(config.schemas_dir), app, customers, env, workers.pid, workers
    )
    try:
        yield pipeline
    finally:
        stop_workers(pipeline.workers)
        jobs.close()
