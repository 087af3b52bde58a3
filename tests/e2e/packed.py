"""Scenarios every blob store runs: the same CSV gzipped, zstd-compressed, xz-compressed and
zipped imports exactly as it is (SPEC 18: compression and ZIP archives "from any source"), and
workers killed in the middle of a job lose no row and write none twice."""

from __future__ import annotations

import gzip
import io
import lzma
import signal
import zipfile
from typing import Any, Protocol

import psutil
import zstandard

from service.storage.jobs import Job
from service.storage.views import job_view
from tests.conftest import query, until


class Runs(Protocol):
    def wait(self, job_id: str, timeout: float = 240) -> Job: ...
    def rows(self, customer: str, job_id: str) -> tuple[int, int]: ...


class Store(Runs, Protocol):
    def put(self, customer: str, name: str, body: bytes) -> str: ...
    def enqueue(self, customer: str, path: str) -> str: ...


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__MACOSX/._" + name, b"junk")
        archive.writestr("export/" + name, data)
    return buffer.getvalue()


def assert_packed_files_import(store: Store, scheme: str, data: bytes, rows: int) -> None:
    """Each packed twin of data (a users CSV of `rows` valid rows) imports all its rows once, and
    the job's view names its source."""
    twins: list[tuple[str, bytes, Any, Any]] = [
        ("packed.csv.gz", gzip.compress(data), "gzip", None),
        ("packed.csv.zst", zstandard.ZstdCompressor().compress(data), "zstd", None),
        ("packed.csv.xz", lzma.compress(data), "xz", None),
        ("packed.zip", zipped("users.csv", data), None, "export/users.csv"),
    ]
    for name, body, compression, member in twins:
        job = store.wait(store.enqueue("acme", store.put("acme", name, body)))
        assert job.status == "succeeded", (name, job.error)
        assert (job.rows_total, job.rows_inserted) == (rows, rows), name
        assert store.rows("acme", job.id) == (rows, rows), name
        source = job_view(job)["source"]
        assert source == {"scheme": scheme, "compression": compression, "format": "csv", "member": member}, source


def kill_workers_mid_job(app_dsn: str, job_id: str, supervisor_pid: int) -> list[int]:
    """SIGKILL every worker process of an `importctl worker` supervisor as soon as a chunk of the
    job runs (the supervisor starts them again); their pids."""
    running = "SELECT count(*) FROM import_chunks WHERE job_id = %s AND running"
    until(lambda: query(app_dsn, running, (job_id,))[0][0] > 0, timeout=60, interval=0.005)
    master = psutil.Process(supervisor_pid).children()[0]
    killed = master.children()
    for worker in killed:
        worker.send_signal(signal.SIGKILL)
    return [worker.pid for worker in killed]


def assert_killed_workers_lose_nothing(store: Runs, app_dsn: str, supervisor_pid: int, job_id: str, rows: int) -> Job:
    """Kill the workers mid-job (kill_workers_mid_job): the job still succeeds with each of its
    `rows` valid rows of customer acme exactly once."""
    killed = kill_workers_mid_job(app_dsn, job_id, supervisor_pid)
    job = store.wait(job_id, timeout=120)
    assert killed
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_inserted) == (rows, rows)
    assert store.rows("acme", job_id) == (rows, rows)
    return job
