"""http(s):// sources (SPEC 18, 16) through real workers (`importctl worker`) and a real gunicorn,
reading from local HTTP servers on 127.0.0.1 (FileServer, tests/unit/test_http_source.py): one
that offers ranges and ETags, one that offers neither (like python -m http.server), one that
redirects, and a port nothing listens on."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.config import Config, CustomerSettings, load_customers
from service.errors import BlobUnavailable, RequestRefused
from service.schema.products import ProductRegistry
from service.stages.enqueue import EnqueueRequest, check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from service.storage.views import job_view
from tests.conftest import Databases, query, until, wait_finished
from tests.e2e.conftest import Stack, free_port, stop
from tests.e2e.packed import assert_killed_workers_lose_nothing
from tests.e2e.test_faults import end, start_supervisor
from tests.integration.conftest import pipeline_env
from tests.unit.test_http_source import FileServer

pytestmark = pytest.mark.slow

BIG_ROWS = 100_000
KILL_ROWS = 100_000
CHUNK_ROWS = 8_000
SIG = "sig=SeCrEt-SaS-SiGnAtUrE"
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
TOKENS = {"tok-acme": ["acme"], "tok-strict": ["strict"]}


def users_csv(rows: int) -> bytes:
    lines = [HEADER] + [
        f"u{i},user{i}@example.com,Zoë,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n" for i in range(1, rows + 1)
    ]
    return "".join(lines).encode()


@dataclass
class HttpsStack:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    products: ProductRegistry
    ranged: FileServer  # ranges and a strong ETag
    plain: FileServer  # neither: Last-Modified only
    moved: FileServer  # answers 302 to everything
    dead: str  # a base URL nothing listens on
    rest: str  # gunicorn's base URL
    worker_log: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def request(self, customer: str, uri: str) -> EnqueueRequest:
        return check_request(
            {"customer_id": customer, "product_type": "users", "blob_uri": uri}, self.config, self.products
        )

    def enqueue(self, customer: str, uri: str) -> str:
        job, _ = enqueue(self.request(customer, uri), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 240) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def rows(self, customer: str, job_id: str) -> tuple[int, int]:
        sql = "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s"
        (row,) = query(self.customers[customer], sql, (job_id,))
        return row

    def post(self, token: str, customer: str, uri: str) -> tuple[int, Any]:
        """POST /enqueue through gunicorn: (status, answer)."""
        conn = http.client.HTTPConnection(urlsplit(self.rest).netloc, timeout=30)
        try:
            body = json.dumps({"customer_id": customer, "product_type": "users", "blob_uri": uri}).encode()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            conn.request("POST", "/enqueue", body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            conn.close()

    def shows_no_signature(self, job: Job) -> None:
        """The URL's query string (a signature) is in no error, job log line or workers' log."""
        logged = " ".join(m for (m,) in query(self.app, "SELECT message FROM import_logs WHERE job_id = %s", (job.id,)))
        texts = {"job error": job.error or "", "job log": logged, "workers' log": self.worker_log.read_text()}
        for where, text in texts.items():
            assert SIG not in text, where


@pytest.fixture(scope="module")
def https_stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsStack]:
    ranged, plain, moved = FileServer(), FileServer(ranges=False, etag=False), FileServer()
    dead = f"http://127.0.0.1:{free_port()}"
    moved.redirect = ranged.base + "/files/acme/elsewhere.csv"
    app = databases.create("app")
    customers = {name: databases.create(name) for name in ("acme", "strict", "dead")}
    acme_prefixes = [f"{server.base}/files/acme/" for server in (ranged, plain, moved)]
    mapping: dict[str, Any] = {
        # The servers are on 127.0.0.1: acme and dead may read private hosts, strict may not.
        "acme": {"dsn": customers["acme"], "url_prefixes": acme_prefixes, "allow_private_hosts": True},
        "strict": {"dsn": customers["strict"], "url_prefixes": [f"{ranged.base}/files/strict/"]},
        "dead": {"dsn": customers["dead"], "url_prefixes": [f"{dead}/files/dead/"], "allow_private_hosts": True},
    }
    tmp = tmp_path_factory.mktemp("https")
    root = tmp / "blobs"
    for name in mapping:
        (root / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(mapping))
    (tmp / "tokens.json").write_text(json.dumps(TOKENS))
    migrate(app)
    env = pipeline_env(
        app,
        tmp / "customer_map.json",
        root,
        API_TOKENS_PATH=str(tmp / "tokens.json"),
        CUSTOMER_DB_RETRY_SECONDS="6",
        WORKER_CONCURRENCY="4",
        CHUNK_ROWS=str(CHUNK_ROWS),
        LOG_LEVEL="DEBUG",  # the workers' log is searched for the signature: let every line through
    )
    dsns, settings = load_customers(tmp / "customer_map.json")
    config = Config(app_db_dsn=app, blob_root=root, customers=dsns, customer_settings=settings, chunk_rows=CHUNK_ROWS)
    jobs = JobStore(app, dispatch=dispatch)
    products = ProductRegistry.load(config.schemas_dir)
    rest_stack = Stack(env, app, customers, root, tmp)
    worker_log = tmp / "workers.log"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        _, rest = rest_stack.gunicorn()
        with worker_log.open("wb") as output:
            workers.append(start_supervisor(env, output=output.fileno()))
        yield HttpsStack(
            env, app, customers, config, jobs, products, ranged, plain, moved, dead, rest, worker_log, workers
        )
    finally:
        for process in workers:
            end(process)
        for process in rest_stack.processes:
            stop(process)
        jobs.close()
        for server in (ranged, plain, moved):
            server.close()


def ranges_asked(server: FileServer, path: str, since: int = 0) -> list[tuple[int, int]]:
    """The byte ranges of the GETs of path (after the first `since` requests of it), each checked
    to carry If-Match and If-Range with the file's ETag."""
    found = []
    for method, headers in server.seen(path)[since:]:
        if method != "GET" or headers.get("Range") == "bytes=0-0":
            continue
        asked = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("Range", ""))
        assert asked is not None, f"a GET without a Range: {headers}"
        assert headers["If-Match"] == headers["If-Range"] == server.tag(server.files[path][0])
        found.append((int(asked.group(1)), int(asked.group(2))))
    return found


def test_a_csv_from_a_ranged_server_is_imported_once_by_ranged_gets_pinned_to_its_etag(
    https_stack: HttpsStack,
) -> None:
    data = users_csv(BIG_ROWS)
    url = https_stack.ranged.put("/files/acme/big.csv", data) + "?" + SIG
    job = https_stack.wait(https_stack.enqueue("acme", url))
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (BIG_ROWS, BIG_ROWS, BIG_ROWS)
    assert https_stack.rows("acme", job.id) == (BIG_ROWS, BIG_ROWS)
    asked = ranges_asked(https_stack.ranged, "/files/acme/big.csv")
    fetched = sum(end + 1 - start for start, end in asked)
    chunks = job.chunks_total or 0
    print(f"\n{BIG_ROWS:,} rows, {len(data):,} bytes, {chunks} chunks, {len(asked)} GETs, {fetched:,} bytes asked")
    assert chunks > 10
    assert fetched <= 2 * len(data) + (chunks + 2) * (2 * 1024 * 1024)
    heads = [method for method, _ in https_stack.ranged.seen("/files/acme/big.csv") if method == "HEAD"]
    assert len(heads) <= 2, "the enqueue and fetch look at the file; the chunks read the plan's ETag"
    https_stack.shows_no_signature(job)


def test_a_file_replaced_during_the_import_fails_the_job_saying_the_file_changed(https_stack: HttpsStack) -> None:
    url = https_stack.ranged.put("/files/acme/replaced.csv", users_csv(KILL_ROWS))
    job_id = https_stack.enqueue("acme", url)
    until(lambda: query(https_stack.app, "SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))[0][0] > 0)
    # The same size: only the ETag tells the new file from the old.
    https_stack.ranged.put("/files/acme/replaced.csv", users_csv(KILL_ROWS).replace(b"student", b"teacher"))
    job = https_stack.wait(job_id)
    assert job.status == "failed"
    assert "the file changed while it was being imported" in (job.error or "")
    until(lambda: https_stack.rows("acme", job_id) == (0, 0), timeout=30)


def test_a_file_that_vanishes_after_enqueue_fails_the_job_naming_it_without_its_query(
    https_stack: HttpsStack,
) -> None:
    url = https_stack.ranged.put("/files/acme/vanishing.csv", users_csv(3)) + "?" + SIG
    request = https_stack.request("acme", url)
    with https_stack.ranged.lock:
        del https_stack.ranged.files["/files/acme/vanishing.csv"]
    job, _ = enqueue(request, https_stack.jobs)
    job = https_stack.wait(job.id, timeout=60)
    assert job.status == "failed"
    assert f"no file at {https_stack.ranged.base}/files/acme/vanishing.csv?... (HTTP 404)" in (job.error or "")
    https_stack.shows_no_signature(job)


def test_over_rest_a_url_is_enqueued_only_under_the_customers_prefixes_and_never_to_a_private_host(
    https_stack: HttpsStack,
) -> None:
    good = https_stack.ranged.put("/files/acme/rest.csv", users_csv(5))
    status, answer = https_stack.post("tok-acme", "acme", good)
    assert status == 202, answer
    assert https_stack.wait(answer["job_id"], timeout=60).status == "succeeded"

    outside = https_stack.ranged.put("/files/other/rest.csv", users_csv(5))
    status, answer = https_stack.post("tok-acme", "acme", outside)
    assert status == 400, answer
    assert answer["error"]["field"] == "blob_uri"
    assert "url_prefixes of customer 'acme'" in answer["error"]["message"]

    private = https_stack.ranged.put("/files/strict/rest.csv", users_csv(5))
    status, answer = https_stack.post("tok-strict", "strict", private)
    assert status == 400, answer
    message = answer["error"]["message"]
    assert answer["error"]["field"] == "blob_uri"
    assert "host 127.0.0.1 is a loopback address" in message and "allow_private_hosts" in message
    assert https_stack.ranged.seen("/files/strict/rest.csv") == [], "never connected to"


def test_a_redirect_is_refused_at_enqueue_and_fails_a_job_it_meets_naming_it(https_stack: HttpsStack) -> None:
    url = f"{https_stack.moved.base}/files/acme/moved.csv?{SIG}"
    status, answer = https_stack.post("tok-acme", "acme", url)
    assert status == 400, answer
    message = answer["error"]["message"]
    assert "answered HTTP 302: redirect not followed" in message and SIG not in message
    job, _ = https_stack.jobs.create_job("acme", "users", url, {})  # as if it began to redirect after the enqueue
    job = https_stack.wait(job.id, timeout=60)
    assert job.status == "failed"
    assert f"{https_stack.moved.base}/files/acme/moved.csv?... answered HTTP 302: redirect not followed" in (
        job.error or ""
    )
    assert https_stack.ranged.seen("/files/acme/elsewhere.csv") == [], "the Location is never asked for"
    https_stack.shows_no_signature(job)


def test_an_unreachable_server_is_retried_then_fails_the_job_naming_the_server_only(https_stack: HttpsStack) -> None:
    url = f"{https_stack.dead}/files/dead/u.csv?{SIG}"
    with pytest.raises(BlobUnavailable) as unavailable:  # at enqueue: no job (REST answers 503)
        https_stack.request("dead", url)
    assert str(unavailable.value) == f"the server {https_stack.dead} cannot be reached (connection refused)"
    job, _ = https_stack.jobs.create_job("dead", "users", url, {})  # as if the server went down after the enqueue
    job = https_stack.wait(job.id, timeout=120)
    assert job.status == "failed"
    error = job.error or ""
    assert f"the server {https_stack.dead} cannot be reached (connection refused)" in error
    assert "gave up after" in error
    assert "/files/dead" not in error
    https_stack.shows_no_signature(job)


def test_a_worker_killed_mid_job_leaves_every_row_exactly_once(https_stack: HttpsStack) -> None:
    url = https_stack.ranged.put("/files/acme/kill.csv", users_csv(KILL_ROWS))
    job_id = https_stack.enqueue("acme", url)
    assert_killed_workers_lose_nothing(https_stack, https_stack.app, https_stack.workers[0].pid, job_id, KILL_ROWS)


def test_a_csv_from_a_server_without_ranges_is_imported_once_reading_it_front_to_back(
    https_stack: HttpsStack,
) -> None:
    # Needs the pipeline to read a streamed blob (blob.streamed) once, front to back.
    rows = 30_000
    url = https_stack.plain.put("/files/acme/plain.csv", users_csv(rows))
    job = https_stack.wait(https_stack.enqueue("acme", url))
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (rows, rows, rows)
    assert https_stack.rows("acme", job.id) == (rows, rows)
    seen = https_stack.plain.seen("/files/acme/plain.csv")
    assert all("Range" not in headers for _, headers in seen)
    gets = [method for method, _ in seen if method == "GET"]
    print(f"\n{rows:,} rows read front to back: {job.chunks_total} chunks, {len(gets)} GETs of the whole file")
    assert (job.chunks_total or 0) > 2 and len(gets) < (job.chunks_total or 0), "the chunks do not GET the file"


def test_the_job_view_does_not_show_the_query_string_of_its_url(https_stack: HttpsStack) -> None:
    url = https_stack.ranged.put("/files/acme/view.csv", users_csv(3)) + "?" + SIG
    job = https_stack.wait(https_stack.enqueue("acme", url), timeout=60)
    assert job.status == "succeeded", job.error
    assert SIG not in json.dumps(job_view(job))
    https_stack.shows_no_signature(job)


def test_a_name_that_resolves_to_a_private_address_is_refused_at_enqueue(https_stack: HttpsStack) -> None:
    # strict's prefixes name 127.0.0.1; a prefix naming localhost is matched by its text, so the
    # refusal below is the connection's: the name resolves to a loopback address.
    localhost = https_stack.ranged.base.replace("127.0.0.1", "localhost")
    strict = CustomerSettings(url_prefixes=(f"{localhost}/files/strict/",))
    config = https_stack.config.with_(customer_settings={**https_stack.config.customer_settings, "strict": strict})
    url = https_stack.ranged.put("/files/strict/by-name.csv", users_csv(2)).replace("127.0.0.1", "localhost")
    with pytest.raises(RequestRefused) as refused:
        check_request({"customer_id": "strict", "product_type": "users", "blob_uri": url}, config, https_stack.products)
    assert refused.value.field == "blob_uri"
    assert "host localhost resolves to a loopback address" in str(refused.value)
    assert https_stack.ranged.seen("/files/strict/by-name.csv") == []


@pytest.mark.parametrize("server", ["ranged", "plain"])
def test_compressed_and_zipped_files_over_http_import_as_the_plain_one(https_stack: HttpsStack, server: str) -> None:
    # Served with ranges: decompressed from ranged reads (a ZIP's central directory read where it
    # is); without: one pass of the body (a ZIP archive into a temp copy first, removed after).
    files = getattr(https_stack, server)
    rows = 5_000
    data = users_csv(rows)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("__MACOSX/._users.csv", b"junk")
        out.writestr("export/users.csv", data)
    for name, body, source in (
        ("users.csv.gz", gzip.compress(data), ("gzip", None)),
        ("export.zip", archive.getvalue(), (None, "export/users.csv")),
    ):
        url = files.put(f"/files/acme/{server}-{name}", body)
        job = https_stack.wait(https_stack.enqueue("acme", url))
        assert job.status == "succeeded", (name, job.error)
        assert (job.rows_total, job.rows_inserted) == (rows, rows)
        assert https_stack.rows("acme", job.id) == (rows, rows)
        view = job_view(job)["source"]
        assert (view["scheme"], view["compression"], view["format"], view["member"]) == (
            "http",
            *source[:1],
            "csv",
            source[1],
        )
