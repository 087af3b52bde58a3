"""Scaling out (docs/performance.md "Scaling out"): two separate worker pools, as on two machines, each a
real `importctl worker` supervisor, share one app DB (the queue) and one customer DB. One big
job's chunks spread over both pools, each chunk runs once, and the job ends exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import JobStore, migrate
from tests.conftest import ROOT, Databases, query, until, wait_finished
from tests.integration.conftest import pipeline_env

ROWS = 24_000
CHUNK_ROWS = 500
CHUNKS = ROWS // CHUNK_ROWS  # 48; far below the 32 MiB chunk byte limit
MIN_CHUNKS_PER_POOL = 3
READY = "Worker process is ready for action."  # dramatiq logs it at INFO once a process listens
CHUNK_DONE = re.compile(r"job (?P<job>\S+): validate\[(?P<chunk>\d+)\] done in ")


@dataclass
class Cluster:
    env: dict[str, str]
    app: str
    customer: str
    config: Config
    jobs: JobStore
    products: ProductRegistry
    tmp: Path


@pytest.fixture(scope="module")
def cluster(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One fresh app DB and one customer DB (acme), a blob area, and the workers' environment.
    No workers: the test starts its own pools."""
    app = databases.create("app")
    acme = databases.create("acme")
    tmp = tmp_path_factory.mktemp("scale_out")
    root = tmp / "blobs"
    (root / "acme").mkdir(parents=True)
    map_path = tmp / "customer_map.json"
    map_path.write_text(json.dumps({"acme": acme}))
    migrate(app)
    # LOG_LEVEL=INFO: the per-chunk "done" lines this test counts are logged at INFO.
    env = pipeline_env(app, map_path, root, CHUNK_ROWS=str(CHUNK_ROWS), WORKER_CONCURRENCY="2", LOG_LEVEL="INFO")
    config = Config(app_db_dsn=app, blob_root=root, customers=load_customer_map(map_path))
    jobs = JobStore(app, dispatch=dispatch)
    try:
        yield Cluster(env, app, acme, config, jobs, ProductRegistry.load(config.schemas_dir), tmp)
    finally:
        jobs.close()


def write_users(path: Path, rows: int) -> Path:
    with path.open("w") as out:
        out.write("external_id,email,first_name,last_name,role,age,active,created_at\n")
        for i in range(1, rows + 1):
            out.write(f"u{i},user{i}@example.com,Zoë,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n")
    return path


def start_pool(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A real `importctl worker` supervisor (one dramatiq process, two threads), its stdout
    and stderr (where the dramatiq master writes its workers' logs) going to `log`."""
    command = [str(Path(sys.executable).parent / "importctl"), "worker", "--processes=1", "--threads=2"]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def end(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor's process group (supervisor, dramatiq master, worker) and wait."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ready(process: subprocess.Popen[bytes], log: Path) -> bool:
    assert process.poll() is None, f"pool exited with {process.returncode}:\n{log.read_text(errors='replace')}"
    return READY in log.read_text(errors="replace")


def chunks_run(log: Path, job_id: str) -> list[int]:
    """The chunk numbers of this job whose validate stage ended in this pool, one per log line."""
    return [int(m["chunk"]) for m in CHUNK_DONE.finditer(log.read_text(errors="replace")) if m["job"] == job_id]


def test_one_jobs_chunks_spread_over_two_worker_pools_and_the_job_ends_exactly(cluster: Cluster) -> None:
    path = write_users(cluster.config.blob_root / "acme" / "big.csv", ROWS)
    logs = [cluster.tmp / "pool-a.log", cluster.tmp / "pool-b.log"]
    pools: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            pools.append(start_pool(cluster.env, log))
        # Both pools listen on the queue before the job is enqueued (neither gets a head start).
        try:
            until(lambda: all(ready(p, log) for p, log in zip(pools, logs, strict=True)), timeout=30, interval=0.1)
        except AssertionError as exc:
            outputs = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')}" for log in logs)
            raise AssertionError(f"both pools did not log {READY!r}: {exc}\n{outputs}") from None
        body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
        job, _ = enqueue(check_request(body, cluster.config, cluster.products), cluster.jobs)
        started = time.monotonic()
        done = wait_finished(cluster.jobs, job.id, timeout=45)
        elapsed = time.monotonic() - started
    finally:
        for pool in pools:
            end(pool)  # also flushes and closes each pool's log

    assert done.status == "succeeded", done.error
    assert done.chunks_total == CHUNKS and done.chunks_done == CHUNKS
    assert (done.rows_total, done.rows_valid, done.rows_invalid, done.rows_inserted) == (ROWS, ROWS, 0, ROWS)
    # Exactly the file's rows in the customer table: each source_row once, holding its own record.
    ((count, distinct, first, last, matching, others),) = query(
        cluster.customer,
        "SELECT count(*), count(DISTINCT source_row), min(source_row), max(source_row), "
        "count(*) FILTER (WHERE data->>'external_id' = 'u' || source_row "
        "AND data->>'email' = 'user' || source_row || '@example.com'), "
        "count(*) FILTER (WHERE job_id <> %s::uuid) FROM users",
        (job.id,),
    )
    assert (count, distinct, first, last, matching, others) == (ROWS, ROWS, 1, ROWS, ROWS, 0)

    per_pool = [chunks_run(log, job.id) for log in logs]
    seen = [set(chunks) for chunks in per_pool]
    summary = ", ".join(
        f"pool {name}: {len(chunks)} chunks {sorted(chunks)}" for name, chunks in zip("ab", seen, strict=True)
    )
    print(f"job {job.id} ran in {elapsed:.1f} s; {summary}")
    for name, chunks in zip("ab", seen, strict=True):
        assert len(chunks) >= MIN_CHUNKS_PER_POOL, f"pool {name} ran too few of the job's chunks: {summary}"
    assert seen[0] | seen[1] == set(range(CHUNKS)), summary
    # Nothing was killed, so no chunk was redelivered: each ran in exactly one pool, once.
    assert not seen[0] & seen[1], summary
    assert sorted(per_pool[0] + per_pool[1]) == list(range(CHUNKS)), summary
