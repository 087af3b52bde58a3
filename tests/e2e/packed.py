"""One scenario every blob store runs (SPEC 18: compression and ZIP archives "from any source"):
the same CSV gzipped, zstd-compressed, xz-compressed and zipped imports exactly as it is."""

from __future__ import annotations

import gzip
import io
import lzma
import zipfile
from typing import Any, Protocol

import zstandard

from service.storage.jobs import Job
from service.storage.views import job_view


class Store(Protocol):
    def put(self, customer: str, name: str, body: bytes) -> str: ...
    def enqueue(self, customer: str, path: str) -> str: ...
    def wait(self, job_id: str, timeout: float = 240) -> Job: ...
    def rows(self, customer: str, job_id: str) -> tuple[int, int]: ...


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
