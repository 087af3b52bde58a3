"""Scenarios every blob store runs: the same CSV gzipped, zstd-compressed, xz-compressed and
zipped imports exactly as it is (SPEC 18: compression and ZIP archives "from any source");
workers killed in the middle of a job lose no row and write none twice; and a tus upload of a
customer whose uploads go to that store lands there (SPEC 19)."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import signal
import uuid
import zipfile
from typing import Any, Protocol

import psutil
import zstandard

from service.config import Config
from service.errors import BlobRefused
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import feeds, uploads
from service.stages.enqueue import check_request, enqueue
from service.stages.services import Services
from service.storage.feeds import FeedStore
from service.storage.jobs import Job, JobStore
from service.storage.uploads import UploadStore
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


class StoreStack(Runs, Protocol):
    config: Config
    products: ProductRegistry
    jobs: JobStore


class FeedStack(StoreStack, Protocol):
    def put(self, customer: str, name: str, body: bytes) -> str: ...


def assert_feeds_import_each_version_once(stack: FeedStack, area_uri: str) -> None:
    """A feed on a prefix of acme's area of this store (area_uri: the area's URI, ending in /)
    imports each object version once in key order, leaves out what its pattern and the dot rule
    leave out, takes a changed object as a new version, and moves each imported object to its
    move_to prefix once its job succeeded (a version that changed meanwhile is left in place)."""
    config = stack.config
    services = Services(config, stack.jobs, stack.products, config.app_db_dsn or "")
    store = FeedStore(config.app_db_dsn or "", maxconn=2)
    tag = uuid.uuid4().hex[:6]

    def put(name: str, first: int) -> None:
        body = "external_id,email\n" + "".join(f"f{tag}{i},f{i}@example.com\n" for i in range(first, first + 3))
        stack.put("acme", f"feed-{tag}/{name}", body.encode())

    def run() -> feeds.RunResult:
        with store.lead(feed.id) as lead:
            assert lead is not None
            return feeds.run(services, lead)

    def imported() -> list[tuple[str, str]]:
        names = []
        for file in reversed(store.files(feed.id, 100)):
            assert file.job_id is not None, file.error
            job = stack.wait(file.job_id, timeout=120)
            assert job.status == "succeeded", job.error
            names.append((file.key.rsplit("/", 1)[1], file.version))
        return names

    try:
        for name, first in (("b.csv", 3), ("a.csv", 0), ("notes.txt", 0), (".hidden.csv", 0)):
            put(name, first)
        prefix = f"{area_uri}feed-{tag}/"
        values = feeds.check_feed(
            {
                "customer_id": "acme",
                "product_type": "users",
                "prefix_uri": prefix,
                "pattern": "*.csv",
                "schedule": {"every_seconds": 3600},
            },
            config,
            stack.products,
        )
        values["after_success"] = feeds.check_after_success(
            {"move_to": f"{area_uri}done-{tag}/"}, "acme", prefix, config
        )
        feed = store.create(values)
        assert run() == feeds.RunResult(2, 2, None)
        first = imported()
        assert [name for name, _ in first] == ["a.csv", "b.csv"]  # key order
        assert run().enqueued == 0
        put("a.csv", 10)  # a new version of a.csv, before its first version is moved
        assert run().enqueued == 1
        names = imported()
        assert [name for name, _ in names] == ["a.csv", "b.csv", "a.csv"] and names[0][1] != names[2][1]
        feeds.settle(services, store)
        done = f"{area_uri}done-{tag}/"
        for name in ("a.csv", "b.csv"):
            _, size, _ = blob.check(blob.locate(done + name, "acme", config), 1 << 20)
            assert size > 0
            try:
                blob.check(blob.locate(prefix + name, "acme", config), 1 << 20)
            except BlobRefused:
                pass
            else:
                raise AssertionError(f"{prefix}{name} is still there after its move")
        with blob.open_blob(blob.locate(done + "a.csv", "acme", config), None) as fh:
            assert f"f{tag}10,".encode() in fh.read()  # the version imported last is the one moved
        assert run() == feeds.RunResult(0, 0, None)
    finally:
        store.close()


def assert_uploads_land_in_the_store(stack: StoreStack, scheme: str, data: bytes, rows: int) -> None:
    """A tus upload of customer globex (whose "uploads" names this store) goes straight to
    globex's area of the store in parts, as the REST route stores requests
    (tests/e2e/test_uploads.py tests that route): nothing of it is kept here but the counted
    bytes that fill no part yet; a request whose checksum fails, one cut off and one that loses
    a race for its offset keep what the rules say; the file is exactly the bytes sent, imports
    by upload_id, and is deleted there with the upload. `data` must span at least two parts."""
    config = stack.config
    part = blob.PART_BYTES
    assert len(data) > 2 * part, "the scenario needs three parts"
    store = UploadStore(config.app_db_dsn or "", maxconn=1)
    local = config.blob_root / ".uploads" / "globex"
    try:
        upload = uploads.create(config, store, "globex", len(data), "to store.csv", {"filename": "to store.csv"})
        assert upload.store is not None and upload.store["uri"].startswith(f"{scheme}://")
        upload = uploads.receive(config, store, upload, 0, io.BytesIO(data).read, 4)
        assert not upload.finished and upload.received == 4
        assert store.pending(upload.id) == ([], data[:4])  # less than a part: counted, in the row
        # A checksum that fails keeps nothing, though a whole part reached the store meanwhile.
        wrong = ("sha256", hashlib.sha256(b"other bytes").digest())
        try:
            uploads.receive(config, store, upload, 4, io.BytesIO(data[4 : part + 100]).read, part + 96, wrong)
        except uploads.ChecksumMismatch:
            pass
        else:
            raise AssertionError("a request whose checksum fails was kept")
        upload = store.get(upload.id) or upload
        assert upload.received == 4 and store.pending(upload.id) == ([], data[:4])
        # A request cut off after part of its bytes keeps them: one part in the store, the rest in the row.
        cut = part + part // 2
        upload = uploads.receive(config, store, upload, 4, io.BytesIO(data[4:cut]).read, len(data) - 4)
        assert upload.received == cut and not upload.finished
        counted, tail = store.pending(upload.id)
        assert len(counted) == 1 and tail == data[part:cut]

        # Two requests race for one offset: the one that counts first wins, the other's part is never named.
        body = io.BytesIO(data[cut:])

        def racing(size: int) -> bytes:
            if body.tell() == 0:
                uploads.receive(
                    config, store, upload, cut, io.BytesIO(data[cut : 2 * part + 10]).read, 2 * part + 10 - cut
                )
            return body.read(size)

        try:
            uploads.receive(config, store, upload, cut, racing, len(data) - cut)
        except uploads.OffsetConflict:
            pass
        else:
            raise AssertionError("both racing requests counted")
        upload = store.get(upload.id) or upload
        assert upload.received == 2 * part + 10
        upload = uploads.receive(
            config,
            store,
            upload,
            upload.received,
            io.BytesIO(data[upload.received :]).read,
            len(data) - upload.received,
        )
        assert upload.finished and upload.blob_uri is not None
        assert upload.blob_uri == upload.store["uri"] and upload.blob_uri.endswith("-to store.csv"), upload.blob_uri
        assert not local.exists() or not list(local.iterdir())  # nothing of it was ever here
        assert store.pending(upload.id) == ([], b"")
        found = blob.locate(upload.blob_uri, "globex", config)
        pinned, size, _ = blob.check(found, 1 << 30)
        assert size == len(data)
        with blob.open_blob(pinned, None) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == hashlib.sha256(data).hexdigest()
        body = {"customer_id": "globex", "product_type": "users", "upload_id": upload.id}
        job = stack.wait(enqueue(check_request(body, config, stack.products, store), stack.jobs)[0].id, timeout=120)
        assert (job.status, job.rows_inserted, job.options["upload"]["filename"]) == ("succeeded", rows, "to store.csv")
        uploads.delete(config, store, upload)
        try:
            blob.check(blob.locate(upload.blob_uri, "globex", config), 1 << 30)
        except BlobRefused as exc:
            assert "no object" in str(exc)
        else:
            raise AssertionError(f"{upload.blob_uri} is still there after the upload was deleted")
        assert store.get(upload.id) is None
        # A finishing request that completed the parts and stopped before marking the upload
        # finished: the client's retry (an empty PATCH at the end) finishes it.
        small = data[:1000]
        again = uploads.create(config, store, "globex", len(small), "again.csv", {})

        def killed(*_: Any) -> None:
            raise RuntimeError("killed after completing the parts")

        store.finish = killed  # type: ignore[method-assign]
        try:
            uploads.receive(config, store, again, 0, io.BytesIO(small).read, len(small))
        except RuntimeError:
            pass
        finally:
            del store.finish
        again = store.get(again.id) or again
        assert again.received == len(small) and not again.finished
        again = uploads.receive(config, store, again, len(small), io.BytesIO().read, 0)
        assert again.finished and again.blob_uri is not None
        with blob.open_blob(blob.locate(again.blob_uri, "globex", config), None) as fh:
            assert fh.read() == small
        uploads.delete(config, store, again)
        # An empty file is one empty part.
        empty = uploads.create(config, store, "globex", 0, "empty.csv", {})
        assert empty.finished and empty.blob_uri is not None
        assert blob.check(blob.locate(empty.blob_uri, "globex", config), 1)[1] == 0
        uploads.delete(config, store, empty)
        # An upload deleted unfinished drops its parts (the caller looks in its store).
        dropped = uploads.create(config, store, "globex", len(data), "dropped.csv", {})
        dropped = uploads.receive(config, store, dropped, 0, io.BytesIO(data).read, part + 10)
        assert dropped.received == part + 10 and len(store.pending(dropped.id)[0]) == 1
        uploads.delete(config, store, dropped)
        assert store.get(dropped.id) is None
    finally:
        store.close()
