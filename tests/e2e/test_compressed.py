"""Compressed files through real workers (SPEC 18): gzip, bzip2, xz and zstd, known by their
magic bytes, in every text format, import exactly as the same file uncompressed does; bombs,
truncated and corrupt streams fail naming the problem and leave no rows; a worker killed
mid-job re-reads its chunk from the bytes the fetch stored, and every row lands once."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import zstandard

from service.storage.jobs import Job
from tests.conftest import Databases, query
from tests.e2e.packed import kill_workers_mid_job
from tests.e2e.test_faults import end, start_supervisor
from tests.e2e.test_hostile_files import RSS_LIMIT, assert_failed_cleanly, peak_rss
from tests.integration.conftest import Pipeline, make_pipeline, start_workers, stop_workers

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
COMPRESS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": (".gz", gzip.compress),
    "bzip2": (".bz2", bz2.compress),
    "xz": (".xz", lzma.compress),
    "zstd": (".zst", lambda data: zstandard.ZstdCompressor(level=3).compress(data)),
}


def users(rows: int, kind: str = "csv") -> bytes:
    """A users file in the given format: every 7th row has a bad email (a reject), the rest valid."""
    lines = []
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        lines.append(sep.join(["external_id", "email", "first_name"]))
    for i in range(1, rows + 1):
        email = f"user{i}@example.com" if i % 7 else f"not-an-email-{i}"
        name = f"Zoë {i}"
        if kind == "csv":
            lines.append(f'u{i},{email},"{name}, jr"')
        elif kind == "tsv":
            lines.append(f"u{i}\t{email}\t{name}")
        elif kind == "kv":
            lines.append(f'external_id=u{i} email={email} first_name="{name}"')
        else:
            lines.append(json.dumps({"external_id": f"u{i}", "email": email, "first_name": name}))
    return ("\n".join(lines) + "\n").encode()


def table(pipeline: Pipeline, customer: str, job_id: str) -> list[tuple]:
    return query(
        pipeline.customer_dsns[customer],
        "SELECT source_row, data FROM users WHERE job_id = %s ORDER BY source_row",
        (job_id,),
    )


def fmt(pipeline: Pipeline, job: Job) -> tuple[str, str]:
    """(compression, kind) the job's plan recorded."""
    plan = pipeline.jobs.plan(job.id)
    assert plan is not None, job
    return plan["format"]["compression"], plan["format"]["kind"]


def ended(pipeline: Pipeline, path: Path, options: dict | None = None) -> Job:
    return pipeline.wait(pipeline.enqueue("acme", "users", path, options).id, timeout=120)


@pytest.mark.parametrize("kind", ["csv", "tsv", "kv", "jsonl"])
@pytest.mark.parametrize("compression", list(COMPRESS))
def test_a_compressed_file_imports_exactly_as_the_plain_one(pipeline: Pipeline, compression: str, kind: str) -> None:
    suffix, compress = COMPRESS[compression]
    content = users(40, kind)  # 3 rows a chunk (the fixture's CHUNK_ROWS): 14 chunks
    plain = pipeline.run("acme", "users", f"plain.{kind}", content)
    packed = ended(pipeline, pipeline.put("acme", f"{compression}-users.{kind}{suffix}", compress(content)))
    assert plain.status == packed.status == "succeeded", (plain.error, packed.error)
    assert (packed.rows_total, packed.rows_inserted, packed.rows_invalid) == (40, 35, 5)
    assert (packed.rows_total, packed.rows_inserted, packed.rows_invalid) == (
        plain.rows_total,
        plain.rows_inserted,
        plain.rows_invalid,
    )
    assert table(pipeline, "acme", packed.id) == table(pipeline, "acme", plain.id)
    plan = pipeline.jobs.plan(packed.id)
    assert plan is not None and plan["format"]["compression"] == compression
    assert plan["format"]["kind"] == kind and plan["stored"] is True
    # The stored chunk bytes go once the job is done.
    left = "SELECT count(*) FROM import_service.chunk_cells WHERE job_id = %s"
    assert query(pipeline.customer_dsns["acme"], left, (packed.id,)) == [(0,)]


def test_the_compression_comes_from_the_magic_bytes_not_the_name(pipeline: Pipeline) -> None:
    content = users(10)
    # gzip without a telling name: the format is sniffed from the decompressed text.
    hidden = ended(pipeline, pipeline.put("acme", "export.bin", gzip.compress(content)))
    assert hidden.status == "succeeded", hidden.error
    assert fmt(pipeline, hidden) == ("gzip", "csv")
    # A name that says .gz over plain text: read as the plain CSV it is.
    liar = ended(pipeline, pipeline.put("acme", "plain.csv.gz", content))
    assert liar.status == "succeeded", liar.error
    assert fmt(pipeline, liar) == ("", "csv")
    assert liar.rows_inserted == hidden.rows_inserted == 9
    # The inner name decides the format: a.kv.zst is key=value text.
    kv = ended(pipeline, pipeline.put("acme", "a.kv.zst", COMPRESS["zstd"][1](users(5, "kv"))))
    assert kv.status == "succeeded" and fmt(pipeline, kv) == ("zstd", "kv")


@pytest.fixture(scope="module")
def worker_peaks(pipeline: Pipeline) -> list[psutil.Process]:
    return psutil.Process(pipeline.workers_pid).children(recursive=True)


def test_a_gzip_bomb_fails_naming_the_ratio_limit_early(pipeline: Pipeline, worker_peaks: list) -> None:
    # 1 GiB of rows with a 512 KiB column of one letter (ignored: not a field), about 1 MB
    # compressed: over 1000x, stopped at 200x, long before 1 GiB.
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        out.write(b"external_id,email,notes\n")
        padding = b"x" * (512 * 1024)
        for i in range(2048):
            out.write(b"u%d,a@example.com,%s\n" % (i, padding))
    path = pipeline.put("acme", "bomb.csv.gz", buffer.getvalue())
    job = pipeline.enqueue("acme", "users", path)
    error = assert_failed_cleanly(pipeline, job.id, "max_compression_ratio", "200")
    assert "times its compressed size" in error
    assert all(peak_rss(p) < RSS_LIMIT for p in worker_peaks), [peak_rss(p) // MiB for p in worker_peaks]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz"])
def test_a_truncated_stream_fails_naming_it_and_leaves_no_rows(pipeline: Pipeline, compression: str) -> None:
    suffix, compress = COMPRESS[compression]
    packed = compress(users(3000))
    path = pipeline.put("acme", f"cut-{compression}.csv{suffix}", packed[: len(packed) * 2 // 3])
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "truncated", compression)


def test_corrupt_gzip_data_mid_file_fails_naming_it_and_leaves_no_rows(pipeline: Pipeline) -> None:
    packed = bytearray(gzip.compress(users(3000)))
    middle = len(packed) // 2
    packed[middle : middle + 64] = b"\xff" * 64
    path = pipeline.put("acme", "corrupt.csv.gz", bytes(packed))
    job_id = pipeline.enqueue("acme", "users", path).id
    assert_failed_cleanly(pipeline, job_id, "not valid gzip data")
    # The chunks stored before the fault went with the job's rows.
    left = "SELECT count(*) FROM import_service.chunk_cells WHERE job_id = %s"
    assert query(pipeline.customer_dsns["acme"], left, (job_id,)) == [(0,)]


def test_a_compressed_tar_and_a_utf16_stream_are_refused_naming_why(pipeline: Pipeline) -> None:
    tarred = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=tarred, mode="w:gz") as tar:
        data = users(3)
        info = tarfile.TarInfo("users.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path = pipeline.put("acme", "users.tar.gz", tarred.getvalue())
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "tar archive")
    utf16 = pipeline.put("acme", "wide.csv.gz", gzip.compress(users(3).decode().encode("utf-16")))
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", utf16).id, "UTF-16", "UTF-8")


def test_a_gzipped_workbook_and_a_zipped_one_import(pipeline: Pipeline, tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["external_id", "email"])
    for i in range(1, 8):
        sheet.append([f"u{i}", f"user{i}@example.com"])
    book.save(tmp_path / "book.xlsx")
    data = (tmp_path / "book.xlsx").read_bytes()
    job = ended(pipeline, pipeline.put("acme", "book.xlsx.gz", gzip.compress(data)))
    assert job.status == "succeeded", job.error
    assert (job.rows_inserted, fmt(pipeline, job)) == (7, ("gzip", "xlsx"))


@pytest.fixture(scope="module")
def small_limits(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Workers whose max_file_bytes (counted decompressed) is 200 kB, the ratio high."""
    yield from make_pipeline(
        databases, tmp_path_factory, ["acme"], overrides={"max_file_bytes": 200_000, "max_compression_ratio": 100_000}
    )


def test_max_file_bytes_counts_the_decompressed_bytes(small_limits: Pipeline) -> None:
    content = users(6000)  # about 260 kB of text, 40 kB compressed
    packed = gzip.compress(content)
    assert len(packed) < 200_000 < len(content)
    path = small_limits.put("acme", "big.csv.gz", packed)
    job = small_limits.wait(small_limits.enqueue("acme", "users", path).id, timeout=120)
    assert job.status == "failed" and "max_file_bytes" in job.error, job.error
    assert "decompresses" in job.error
    tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'users'"
    assert query(small_limits.customer_dsns["acme"], tables) == [(0,)]  # failed at fetch, before any table


def test_a_worker_killed_mid_job_rereads_stored_chunks_and_every_row_lands_once(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = make_pipeline(databases, tmp_path_factory, ["acme"], overrides={"chunk_rows": 500})
    pipeline = next(stack)
    stop_workers(pipeline.workers)  # `importctl worker` instead: it starts a killed pool again
    supervisor = start_supervisor(pipeline.env)
    try:
        rows = 60_000
        content = b"external_id,email\n" + b"".join(b"u%d,user%d@example.com\n" % (i, i) for i in range(rows))
        path = pipeline.put("acme", "kill.csv.zst", zstandard.ZstdCompressor().compress(content))
        job_id = pipeline.enqueue("acme", "users", path).id
        killed = kill_workers_mid_job(pipeline.app_dsn, job_id, supervisor.pid)
        job = pipeline.wait(job_id, timeout=180)
        assert killed
        assert job.status == "succeeded", job.error
        assert (job.rows_total, job.rows_inserted) == (rows, rows)
        counted = "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s"
        assert query(pipeline.customer_dsns["acme"], counted, (job_id,)) == [(rows, rows)]
    finally:
        end(supervisor)
        pipeline.workers = start_workers(pipeline.env)  # for the fixture's own teardown
        next(stack, None)


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_with_one_data_file_imports_it_ignoring_mac_and_dot_files(pipeline: Pipeline) -> None:
    content = users(20)
    archive = zipped(
        {
            "export/": b"",
            "export/users.csv": content,
            "__MACOSX/export/._users.csv": b"\x00\x05\x16\x07junk",
            "export/.DS_Store": b"\x00\x00\x00\x01Bud1",
        }
    )
    job = ended(pipeline, pipeline.put("acme", "export.zip", archive))
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_inserted, job.rows_invalid) == (20, 18, 2)
    plan = pipeline.jobs.plan(job.id)
    assert plan is not None and plan["format"]["member"] == "export/users.csv" and plan["stored"] is True
    plain = pipeline.run("acme", "users", "plain.csv", content)
    assert table(pipeline, "acme", job.id) == table(pipeline, "acme", plain.id)


def test_a_zip_with_several_data_files_needs_option_member(pipeline: Pipeline) -> None:
    archive = zipped({"a.csv": users(4), "b.kv": users(6, "kv"), "c.jsonl": users(5, "jsonl")})
    path = pipeline.put("acme", "several.zip", archive)
    error = assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "member")
    assert all(name in error for name in ("a.csv", "b.kv", "c.jsonl")), error
    picked = ended(pipeline, path, {"member": "b.kv"})
    assert picked.status == "succeeded", picked.error
    assert picked.rows_total == 6 and fmt(pipeline, picked) == ("", "kv")
    missing = pipeline.enqueue("acme", "users", path, {"member": "d.csv"})
    assert "d.csv" in assert_failed_cleanly(pipeline, missing.id, "member")


def test_a_zip_member_may_itself_be_compressed_and_stored_members_import(pipeline: Pipeline) -> None:
    inner = ended(pipeline, pipeline.put("acme", "inner.zip", zipped({"users.csv.gz": gzip.compress(users(9))})))
    assert inner.status == "succeeded", inner.error
    assert inner.rows_total == 9 and fmt(pipeline, inner) == ("gzip", "csv")
    stored = ended(pipeline, pipeline.put("acme", "stored.zip", zipped({"u.tsv": users(8, "tsv")}, zipfile.ZIP_STORED)))
    assert stored.status == "succeeded" and stored.rows_total == 8, stored.error


def test_zip_members_that_cannot_be_read_fail_naming_the_member_and_why(pipeline: Pipeline) -> None:
    bzipped = zipped({"users.csv": users(5)}, zipfile.ZIP_BZIP2)
    path = pipeline.put("acme", "bzip2.zip", bzipped)
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "users.csv", "bzip2")
    encrypted = bytearray(zipped({"secret.csv": users(5)}))
    # Set the "encrypted" flag bit in the local header and the central directory entry.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = encrypted.find(signature) + offset
        encrypted[at] |= 0x01
    path = pipeline.put("acme", "encrypted.zip", bytes(encrypted))
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "secret.csv", "encrypted")
    plain = pipeline.put("acme", "not-a-zip.csv", users(3))
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", plain, {"member": "x.csv"}).id, "ZIP")


def test_a_zip_bomb_fails_naming_the_limit(pipeline: Pipeline, worker_peaks: list) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("users.csv", "w", force_zip64=True) as member:
            member.write(b"external_id,email,notes\n")
            padding = b"x" * (512 * 1024)
            for i in range(2048):
                member.write(b"u%d,a@example.com,%s\n" % (i, padding))
    path = pipeline.put("acme", "bomb.zip", buffer.getvalue())
    assert_failed_cleanly(pipeline, pipeline.enqueue("acme", "users", path).id, "max_compression_ratio")
    assert all(peak_rss(p) < RSS_LIMIT for p in worker_peaks), [peak_rss(p) // MiB for p in worker_peaks]
