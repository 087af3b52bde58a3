"""Hostile files through real workers: each ends in a clear failure within SPEC 7's limits,
leaves no rows, blocks nothing, and the worker's memory stays bounded."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from service.errors import RequestRefused
from tests.conftest import query
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
RSS_LIMIT = 200 * MiB


@pytest.fixture(scope="module")
def worker_peaks(pipeline: Pipeline) -> list[psutil.Process]:
    """The worker processes that run this module's jobs, whose peak memory the tests read."""
    return psutil.Process(pipeline.workers_pid).children(recursive=True)


def peak_rss(process: psutil.Process) -> int:
    """VmHWM: the highest resident set size the process ever had."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def assert_failed_cleanly(pipeline: Pipeline, job_id: str, *words: str) -> str:
    job = pipeline.wait(job_id, timeout=120)
    assert job.status == "failed"
    for word in words:
        assert word in job.error, job.error
    count = query(pipeline.customer_dsns["acme"], "SELECT count(*) FROM pg_tables WHERE tablename = 'users'")
    if count == [(1,)]:
        assert query(pipeline.customer_dsns["acme"], "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [
            (0,)
        ]
    return job.error


@pytest.mark.parametrize("mebibytes, limit", [(100, "max_record_bytes"), (2, "max_field_bytes")])
def test_a_huge_single_field_fails_naming_the_limit_with_bounded_memory(
    pipeline: Pipeline, worker_peaks: list[psutil.Process], mebibytes: int, limit: str
) -> None:
    # 100 MiB on one line passes the 10 MiB record limit before the field ends; 2 MiB the field limit.
    path = pipeline.config.blob_root / "acme" / f"huge-field-{mebibytes}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(b"external_id,email\nu1,a@example.com\nu2,")
        chunk = b"x" * MiB
        for _ in range(mebibytes):
            out.write(chunk)
        out.write(b"\n")
    job = pipeline.enqueue("acme", "users", path)
    assert_failed_cleanly(pipeline, job.id, limit, "line 3")
    assert all(peak_rss(p) < RSS_LIMIT for p in worker_peaks), [peak_rss(p) // MiB for p in worker_peaks]


def test_an_xlsx_decompression_bomb_fails_naming_the_xlsx_limit(
    pipeline: Pipeline, worker_peaks: list[psutil.Process]
) -> None:
    path = pipeline.config.blob_root / "acme" / "bomb.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            zeros = b"\0" * (16 * MiB)
            for _ in range(70):  # 1.1 GiB uncompressed, about 1 MB on disk
                member.write(zeros)
    assert path.stat().st_size < 20 * MiB
    job = pipeline.enqueue("acme", "users", path)
    assert_failed_cleanly(pipeline, job.id, "max_xlsx_bytes")
    assert all(peak_rss(p) < RSS_LIMIT for p in worker_peaks)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("quotes.csv", b'"' * 100_000, ("line 1",)),
        ("nul.csv", b"external_id,email\nu1,a@example.com\nu2,b\x00@example.com\n", ("line 3", "NUL")),
        ("binary.csv", os.urandom(1) + b"\xff\xfe\xfd" + os.urandom(65536), ("line",)),
        ("bad-utf8.tsv", b"external_id\temail\nu1\t\xe9t\xe9@example.com\n", ("line 2",)),
    ],
)
def test_malformed_text_fails_naming_the_line(
    pipeline: Pipeline, name: str, content: bytes, words: tuple[str, ...]
) -> None:
    path = pipeline.put("acme", name, content)
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, *words)


def test_paths_outside_the_customer_area_are_refused_at_enqueue(pipeline: Pipeline) -> None:
    other = pipeline.put("globex", "theirs.csv", b"external_id,email\nu,a@example.com\n")
    sneaky = pipeline.config.blob_root / "acme" / "link.csv"
    sneaky.symlink_to(other)
    dotted = Path(f"{pipeline.config.blob_root}/acme/../globex/theirs.csv")
    for path in (sneaky, dotted, Path("/etc/passwd")):
        with pytest.raises(RequestRefused, match="outside the blob area"):
            pipeline.enqueue("acme", "users", path)


def test_a_file_swapped_for_an_outside_symlink_after_enqueue_fails_the_job(pipeline: Pipeline) -> None:
    path = pipeline.put("acme", "swap.csv", b"external_id,email\nu1,a@example.com\n")
    other = pipeline.put("globex", "secret.csv", b"external_id,email\ns1,s@example.com\n")
    job = pipeline.enqueue_held("acme", "users", path)  # no worker sees it before the swap
    path.unlink()
    path.symlink_to(other)
    pipeline.release()
    error = assert_failed_cleanly(pipeline, job.id, "outside the blob area")
    assert "secret" not in error


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_blob_that_is_not_a_regular_file_is_refused_at_enqueue_and_fails_if_swapped_in(
    pipeline: Pipeline, kind: str
) -> None:
    odd = pipeline.config.blob_root / "acme" / f"odd-{kind}.csv"
    os.mkfifo(odd) if kind == "fifo" else odd.mkdir()
    with pytest.raises(RequestRefused, match="not a regular file"):
        pipeline.enqueue("acme", "users", odd)
    path = pipeline.put("acme", f"later-{kind}.csv", b"external_id,email\nu1,a@example.com\n")
    job = pipeline.enqueue_held("acme", "users", path)
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    pipeline.release()
    started = time.monotonic()
    ended = pipeline.wait(job.id, timeout=30)
    assert ended.status == "failed" and "not a regular file" in ended.error
    assert time.monotonic() - started < 30  # nothing blocked on the FIFO
