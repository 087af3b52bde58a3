"""gs:// objects (SPEC 18, to the letter of SPEC 17) against gcp-storage-emulator (PyPI, in
requirements-dev.txt) on 127.0.0.1, behind a proxy that counts the bytes each GET sends back,
with real `importctl worker` processes reading from it.

The emulator serves ranged GETs and gives every write a new generation, but ignores
`ifGenerationMatch` on a download; the proxy answers such a GET 412 when the object's current
generation is another, as GCS does (https://cloud.google.com/storage/docs/request-preconditions).

The emulator takes an XML API PUT /<bucket>/<object> (a signed URL's request) but never looks at
its signature; the proxy checks a signed URL as GCS does (V4 signing, from the request alone and
the public half of the test's service account key; expiry) and refuses (403) what GCS would."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from service.config import Config, load_customers
from service.errors import BlobRefused, BlobUnavailable, RequestRefused
from service.schema.products import ProductRegistry
from service.sources import blob
from service.sources.ranged import HEAD_BYTES, READ_BYTES
from service.stages.enqueue import EnqueueRequest, check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from service.storage.views import job_view
from tests.conftest import ROOT, Databases, query, until, wait_finished
from tests.e2e.conftest import free_port
from tests.e2e.packed import (
    assert_feeds_import_each_version_once,
    assert_killed_workers_lose_nothing,
    assert_packed_files_import,
    assert_uploads_land_in_the_store,
)
from tests.e2e.test_azure import HOP_BY_HOP, UPLOAD_ROWS, QuietServer, listening, users_csv
from tests.e2e.test_faults import end, start_supervisor
from tests.e2e.test_s3 import canonical_request, signed_expiry
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

BUCKET = "imports"
PREFIX = "landing"
BIG_ROWS = 100_000
KILL_ROWS = 100_000
CHUNK_ROWS = 8_000
IMPORTCTL = str(Path(sys.executable).parent / "importctl")
EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"
# What would give a credential away in a log or a view (there is none to leak with an emulator:
# these check that nothing is sent or shown that could hold one).
CREDENTIAL_MARKS = ("Authorization", "Bearer", "private_key", "access_token")
# The service account whose key signs upload URLs (a key made for the test, in a temp file).
SIGNER = "importer@imports-test.iam.gserviceaccount.com"


def v4_refusal(method: str, uri: str, headers: Mapping[str, str], public_key: Any) -> str | None:
    """Why GCS would refuse this signed-URL request, or None: V4 signing with the test account's
    key (https://cloud.google.com/storage/docs/access-control/signing-urls-manually)."""
    path, _, query = uri.partition("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if params.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" or "X-Goog-Signature" not in params:
        return "AccessDenied: not a V4 signed URL"
    account, *scope = params["X-Goog-Credential"].split("/")
    if account != SIGNER:
        return "AccessDenied: unknown service account"
    if not 1 <= int(params["X-Goog-Expires"]) <= 604800:
        return "AuthorizationQueryParametersError: X-Goog-Expires"
    if datetime.now(UTC) > signed_expiry(f"?{query}", "X-Goog"):
        return "ExpiredToken: Invalid argument"
    canonical = canonical_request(method, path, query, headers, "X-Goog-Signature")
    digest = sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["GOOG4-RSA-SHA256", params["X-Goog-Date"], "/".join(scope), digest])
    try:
        signature = bytes.fromhex(params["X-Goog-Signature"])
        public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return "SignatureDoesNotMatch"
    return None


class CountingProxy:
    """An HTTP proxy in front of the emulator recording every download GET (its object, Range and
    the bytes sent back), every metadata GET (its object) and any Authorization header; it
    answers a download whose ifGenerationMatch is not the object's generation 412, as GCS does."""

    def __init__(self, upstream_port: int) -> None:
        self.lock = threading.Lock()
        self.gets: list[tuple[str, str | None, int]] = []
        self.heads: list[str] = []
        self.authorized = 0
        self.public_key: Any = None  # of the service account that signs URLs
        self.signed: list[tuple[str, str, str | None]] = []  # signed-URL requests: (method, path, refusal)
        proxy = self

        def call(method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[Any, bytes]:
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                upstream.request(method, path, body=body, headers=headers)
                answer = upstream.getresponse()
                return answer, answer.read()
            finally:
                upstream.close()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                parts = urlsplit(self.path)
                wanted = parse_qs(parts.query).get("ifGenerationMatch", [None])[0]
                download = self.command == "GET" and parts.path.startswith("/download/storage/v1/")
                status, reason, answer_headers, data = 0, "", [], b""
                if "X-Goog-Signature=" in parts.query:
                    lowered = {k.lower(): v for k, v in self.headers.items()}
                    refusal = v4_refusal(self.command, self.path, lowered, proxy.public_key)
                    with proxy.lock:
                        proxy.signed.append((self.command, unquote(parts.path), refusal))
                    if refusal is not None:
                        status, reason = 403, "Forbidden"
                        code = refusal.split(":")[0]
                        data = f"<Error><Code>{code}</Code><Message>{refusal}</Message></Error>".encode()
                        answer_headers = [("Content-Type", "application/xml")]
                if download and wanted is not None and not status:
                    meta, text = call("GET", parts.path.removeprefix("/download"), None, {})
                    if meta.status == 200 and str(json.loads(text)["generation"]) != wanted:
                        status, reason = 412, "Precondition Failed"
                        data = b'{"error": {"code": 412, "message": "conditionNotMet"}}'
                        answer_headers = [("Content-Type", "application/json")]
                if not status:
                    answer, data = call(self.command, self.path, body, headers)
                    status, reason = answer.status, answer.reason
                    answer_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP]
                self.send_response_only(status, reason)
                for name, value in answer_headers:
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                with contextlib.suppress(ConnectionError):  # a worker SIGKILLed mid-read
                    self.end_headers()
                    self.wfile.write(data)
                with proxy.lock:
                    proxy.authorized += "Authorization" in self.headers
                    if download:
                        proxy.gets.append((parts.path, self.headers.get("Range"), len(data)))
                    elif self.command == "GET" and parts.path.startswith("/storage/v1/b/"):
                        proxy.heads.append(parts.path)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = forward

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fetched(self, name: str) -> list[tuple[str | None, int]]:
        path = f"/download/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}"
        with self.lock:
            return [(ranged, sent) for got, ranged, sent in self.gets if got == path]

    def headed(self, name: str) -> list[str]:
        path = f"/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}"
        with self.lock:
            return [got for got in self.heads if got == path]


@dataclass
class GcsStack:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    products: ProductRegistry
    client: Any  # a storage.Client straight to the emulator
    proxy: CountingProxy
    dead_endpoint: str
    tmp: Path
    worker_log: Path
    big_name: str = ""
    kill_name: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def put(self, customer: str, name: str, body: bytes, bucket: str = BUCKET) -> str:
        path = f"{PREFIX}/{customer}/{name}"
        self.client.bucket(bucket).blob(path).upload_from_string(body)
        return path

    def request(self, customer: str, uri: str) -> EnqueueRequest:
        return check_request(
            {"customer_id": customer, "product_type": "users", "blob_uri": uri}, self.config, self.products
        )

    def enqueue(self, customer: str, path: str) -> str:
        job, _ = enqueue(self.request(customer, f"gs://{BUCKET}/{path}"), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 240) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def rows(self, customer: str, job_id: str) -> tuple[int, int]:
        sql = "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s"
        (row,) = query(self.customers[customer], sql, (job_id,))
        return row

    def shows_no_credential(self, job: Job) -> None:
        """Nothing was sent with an Authorization header, and the job's view, its log lines and the
        workers' log show nothing that could hold a credential."""
        logged = " ".join(m for (m,) in query(self.app, "SELECT message FROM import_logs WHERE job_id = %s", (job.id,)))
        texts = {"job view": json.dumps(job_view(job)), "job log": logged, "workers' log": self.worker_log.read_text()}
        for where, text in texts.items():
            assert not [mark for mark in CREDENTIAL_MARKS if mark in text], where
        assert self.proxy.authorized == 0, "an emulator is read anonymously"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """gcp-storage-emulator on 127.0.0.1 (a free port, a temp folder), with the bucket."""
    port = free_port()
    folder = tmp_path_factory.mktemp("gcs-emulator")
    command = [str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET, "-q"]
    env = dict(os.environ, STORAGE_BASE=str(folder))
    env.pop("STORAGE_EMULATOR_HOST", None)
    log = folder / "emulator.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
    try:
        until(lambda: listening(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, f"the GCS emulator did not start: {log.read_text()}"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A service account key file made for the test (GOOGLE_APPLICATION_CREDENTIALS names it in the
    tests that sign) and its public half (the proxy checks signatures with it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account",
        "project_id": "imports-test",
        "private_key_id": "test-key-1",
        "private_key": pem.decode(),
        "client_email": SIGNER,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path_factory.mktemp("gcs-key") / "service-account.json"
    path.write_text(json.dumps(info))
    return path, key.public_key()


@pytest.fixture(scope="module")
def gcs_stack(databases: Databases, emulator: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsStack]:
    proxy = CountingProxy(emulator)
    emulator_host = f"http://127.0.0.1:{proxy.port}"
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    app = databases.create("app")
    customers = {name: databases.create(name) for name in ("acme", "globex", "plain", "dead")}
    area = {"bucket": BUCKET, "prefix": PREFIX}
    mapping: dict[str, Any] = {
        "acme": {"dsn": customers["acme"], "gcs": area},
        "globex": {"dsn": customers["globex"], "gcs": area, "uploads": "gcs"},  # SPEC 19
        "plain": customers["plain"],
        "dead": {"dsn": customers["dead"], "gcs": dict(area, endpoint_url=dead_endpoint)},
    }
    tmp = tmp_path_factory.mktemp("gcs")
    root = tmp / "blobs"
    for name in mapping:
        (root / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(mapping))
    migrate(app)
    env = pipeline_env(
        app,
        tmp / "customer_map.json",
        root,
        CUSTOMER_DB_RETRY_SECONDS="6",
        WORKER_CONCURRENCY="4",
        CHUNK_ROWS=str(CHUNK_ROWS),
        STORAGE_EMULATOR_HOST=emulator_host,
        LOG_LEVEL="DEBUG",  # the workers' log is searched for credentials: let every library speak
    )
    dsns, settings = load_customers(tmp / "customer_map.json")
    config = Config(
        app_db_dsn=app,
        blob_root=root,
        customers=dsns,
        customer_settings=settings,
        chunk_rows=CHUNK_ROWS,
        storage_emulator_host=emulator_host,
    )
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": f"http://127.0.0.1:{emulator}"},
    )
    client.create_bucket("other")
    jobs = JobStore(app, dispatch=dispatch)
    products = ProductRegistry.load(config.schemas_dir)
    worker_log = tmp / "workers.log"
    stack = GcsStack(env, app, customers, config, jobs, products, client, proxy, dead_endpoint, tmp, worker_log)
    stack.big_name = stack.put("acme", "big.csv", users_csv(BIG_ROWS))
    stack.kill_name = stack.put("acme", "kill.csv", users_csv(KILL_ROWS))
    with worker_log.open("wb") as output:
        stack.workers.append(start_supervisor(env, output=output.fileno()))
    try:
        yield stack
    finally:
        for process in stack.workers:
            end(process)
        jobs.close()
        proxy.server.shutdown()


def test_a_large_csv_in_gcs_is_imported_once_with_chunks_reading_only_their_ranges(gcs_stack: GcsStack) -> None:
    size = len(users_csv(BIG_ROWS))
    before = len(gcs_stack.proxy.fetched(gcs_stack.big_name))
    heads_before = len(gcs_stack.proxy.headed(gcs_stack.big_name))
    job_id = gcs_stack.enqueue("acme", gcs_stack.big_name)
    job = gcs_stack.wait(job_id)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (BIG_ROWS, BIG_ROWS, BIG_ROWS)
    assert gcs_stack.rows("acme", job_id) == (BIG_ROWS, BIG_ROWS)
    gets = gcs_stack.proxy.fetched(gcs_stack.big_name)[before:]
    chunks = job.chunks_total or 0
    fetched = sum(sent for _, sent in gets)
    print(
        f"\n{BIG_ROWS:,}-row file: {size:,} bytes, {chunks} chunks, {len(gets)} GETs, {fetched:,} bytes fetched "
        f"({fetched / size:.2f} x the file: one scan by fetch + each chunk its own range)"
    )
    assert chunks > 10
    assert all(ranged and ranged.startswith("bytes=") for ranged, _ in gets), "every GET is a ranged GET"
    assert max(sent for _, sent in gets) <= READ_BYTES
    assert fetched <= 2 * size + (chunks + 2) * (READ_BYTES + HEAD_BYTES)
    # The enqueue and fetch read the object's metadata; the chunks do not (their GETs carry the generation).
    assert len(gcs_stack.proxy.headed(gcs_stack.big_name)) - heads_before <= 2
    gcs_stack.shows_no_credential(job)


def test_an_xlsx_in_gcs_is_imported(gcs_stack: GcsStack) -> None:
    name = gcs_stack.put("acme", "users.xlsx", (ROOT / "sample" / "acme" / "users-xlsx.xlsx").read_bytes())
    job = gcs_stack.wait(gcs_stack.enqueue("acme", name), timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (6, 5, 1)
    assert gcs_stack.rows("acme", job.id) == (5, 5)


def test_a_missing_object_is_refused_at_enqueue(gcs_stack: GcsStack) -> None:
    with pytest.raises(RequestRefused) as refused:
        gcs_stack.request("acme", f"gs://{BUCKET}/{PREFIX}/acme/nothing-here.csv")
    assert refused.value.field == "blob_uri"
    assert f"no object at gs://{BUCKET}/{PREFIX}/acme/nothing-here.csv" in str(refused.value)


def test_an_object_over_max_file_bytes_is_refused_at_enqueue_without_reading_it(gcs_stack: GcsStack) -> None:
    name = gcs_stack.put("acme", "too-big.csv", users_csv(50))
    before = len(gcs_stack.proxy.fetched(name))
    body = {"customer_id": "acme", "product_type": "users", "blob_uri": f"gs://{BUCKET}/{name}"}
    with pytest.raises(RequestRefused) as refused:
        check_request(body, gcs_stack.config.with_(max_file_bytes=1000), gcs_stack.products)
    assert refused.value.field == "blob_uri"
    assert "over the max_file_bytes limit (1000 bytes)" in str(refused.value)
    assert len(gcs_stack.proxy.fetched(name)) == before, "only its metadata was read"


@pytest.mark.parametrize(
    ("customer", "uri", "says"),
    [
        ("acme", f"gs://{BUCKET}/{PREFIX}/acme/../globex/u.csv", "'..' segments"),
        ("acme", f"gs://{BUCKET}/{PREFIX}/globex/u.csv", "outside the GCS area of customer 'acme'"),
        ("acme", f"gs://other/{PREFIX}/acme/u.csv", "may read only 'imports'"),
        ("acme", f"gs://Bad_Bucket/{PREFIX}/acme/u.csv", "not a valid bucket name"),
        ("acme", f"gs://{BUCKET}/{PREFIX}/acme/{'k' * 1100}.csv", "over GCS's limit of 1024"),
        ("plain", f"gs://{BUCKET}/{PREFIX}/plain/u.csv", "it has no GCS area"),
    ],
)
def test_a_gs_uri_outside_the_customers_area_is_a_400_naming_blob_uri(
    gcs_stack: GcsStack, customer: str, uri: str, says: str
) -> None:
    # The objects exist: only the confinement refuses them.
    gcs_stack.put("globex", "u.csv", users_csv(2))
    gcs_stack.put("acme", "u.csv", users_csv(2), bucket="other")
    gcs_stack.put("plain", "u.csv", users_csv(2))
    with pytest.raises(RequestRefused) as refused:
        gcs_stack.request(customer, uri)
    assert refused.value.field == "blob_uri"
    assert says in str(refused.value)


def test_an_object_replaced_during_the_import_fails_the_job_saying_the_file_changed(gcs_stack: GcsStack) -> None:
    name = gcs_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS))
    job_id = gcs_stack.enqueue("acme", name)
    until(lambda: query(gcs_stack.app, "SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))[0][0] > 0)
    # The same size: only the generation tells the new object from the old.
    gcs_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS).replace(b"student", b"teacher"))
    job = gcs_stack.wait(job_id)
    assert job.status == "failed"
    assert "the file changed while it was being imported" in (job.error or "")
    until(lambda: gcs_stack.rows("acme", job_id) == (0, 0), timeout=30)


def test_an_object_that_vanishes_after_enqueue_fails_the_job_naming_it(gcs_stack: GcsStack) -> None:
    name = gcs_stack.put("acme", "vanishing.csv", users_csv(3))
    request = gcs_stack.request("acme", f"gs://{BUCKET}/{name}")
    gcs_stack.client.bucket(BUCKET).blob(name).delete()
    job, _ = enqueue(request, gcs_stack.jobs)
    job = gcs_stack.wait(job.id, timeout=60)
    assert job.status == "failed"
    assert f"no object at gs://{BUCKET}/{name}" in (job.error or "")


def test_an_unreachable_gcs_is_retried_then_fails_the_job_naming_the_endpoint_only(gcs_stack: GcsStack) -> None:
    uri = f"gs://{BUCKET}/{PREFIX}/dead/u.csv"
    with pytest.raises(BlobUnavailable) as unavailable:  # at enqueue: no job (REST answers 503)
        gcs_stack.request("dead", uri)
    assert f"the GCS endpoint {gcs_stack.dead_endpoint} cannot be reached" in str(unavailable.value)
    job, _ = gcs_stack.jobs.create_job("dead", "users", uri, {})  # as if GCS went down after the enqueue
    job = gcs_stack.wait(job.id, timeout=120)
    assert job.status == "failed"
    error = job.error or ""
    assert f"the GCS endpoint {gcs_stack.dead_endpoint} cannot be reached" in error
    assert "gave up after" in error
    assert f"the GCS endpoint {gcs_stack.dead_endpoint} cannot be reached" in gcs_stack.worker_log.read_text()
    gcs_stack.shows_no_credential(job)


def test_a_worker_killed_mid_job_leaves_every_row_exactly_once(gcs_stack: GcsStack) -> None:
    job_id = gcs_stack.enqueue("acme", gcs_stack.kill_name)
    job = assert_killed_workers_lose_nothing(gcs_stack, gcs_stack.app, gcs_stack.workers[0].pid, job_id, KILL_ROWS)
    gcs_stack.shows_no_credential(job)


def test_importctl_enqueue_file_uploads_into_the_customers_gcs_area(gcs_stack: GcsStack) -> None:
    source = gcs_stack.tmp / "local users.csv"
    source.write_bytes(users_csv(7))
    command = [IMPORTCTL, "enqueue", "--customer=globex", "--product=users", f"--file={source}", "--wait"]
    result = subprocess.run(command, env=gcs_stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    job = gcs_stack.jobs.get(result.stdout.strip())
    assert job is not None and job.status == "succeeded", job
    assert job.blob_uri.startswith(f"gs://{BUCKET}/{PREFIX}/globex/uploads/")
    assert job.blob_uri.endswith("-local users.csv")
    name = job.blob_uri.removeprefix(f"gs://{BUCKET}/")
    assert gcs_stack.client.bucket(BUCKET).blob(name).download_as_bytes() == users_csv(7)
    assert not any((gcs_stack.config.blob_root / "globex").rglob("*")), "nothing copied into the file blob area"
    assert gcs_stack.rows("globex", job.id) == (7, 7)
    gcs_stack.shows_no_credential(job)


def test_compressed_and_zipped_objects_import_as_the_plain_one(gcs_stack: GcsStack) -> None:
    assert_packed_files_import(gcs_stack, "gs", users_csv(3_000), 3_000)


def test_a_presigned_url_takes_a_file_that_imports_through_its_blob_uri(
    gcs_stack: GcsStack, signing_key: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, gcs_stack.proxy.public_key = signing_key
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    body = users_csv(5)
    presigned = blob.presign("acme", "new users.csv", "gcs", gcs_stack.config)
    assert presigned.method == "PUT" and presigned.headers == {}
    assert presigned.blob_uri.startswith(f"gs://{BUCKET}/{PREFIX}/acme/uploads/")
    assert re.fullmatch(r"[0-9a-f]{12}-new users\.csv", presigned.blob_uri.rsplit("/", 1)[1])
    name = presigned.blob_uri.removeprefix(f"gs://{BUCKET}/")
    # On the emulator's host (STORAGE_EMULATOR_HOST, here the proxy), path style, as GCS's XML API.
    assert presigned.url.startswith(f"{gcs_stack.config.storage_emulator_host}/{BUCKET}/{quote(name)}?")
    assert "PRIVATE KEY" not in presigned.url and presigned.url not in repr(presigned)
    answer = requests.put(presigned.url, data=body, headers=presigned.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert gcs_stack.proxy.signed[-1] == ("PUT", f"/{BUCKET}/{name}", None), "signed as GCS checks it"
    found, size, _ = blob.check(blob.locate(presigned.blob_uri, "acme", gcs_stack.config), 1 << 20)
    assert size == len(body)
    job, _ = enqueue(gcs_stack.request("acme", presigned.blob_uri), gcs_stack.jobs)
    job = gcs_stack.wait(job.id, timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (5, 5, 5)
    assert gcs_stack.rows("acme", job.id) == (5, 5)
    gcs_stack.shows_no_credential(job)


def test_a_presigned_url_expires_within_an_hour_and_writes_only_its_own_object(
    gcs_stack: GcsStack, signing_key: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, gcs_stack.proxy.public_key = signing_key
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    before = datetime.now(UTC).replace(microsecond=0)
    presigned = blob.presign("acme", "u.csv", "gcs", gcs_stack.config, expires_in=7 * 24 * 3600)
    after = datetime.now(UTC)
    assert parse_qs(urlsplit(presigned.url).query)["X-Goog-Expires"] == ["3600"]
    assert signed_expiry(presigned.url, "X-Goog") == presigned.expires_at
    assert before + timedelta(hours=1) <= presigned.expires_at <= after + timedelta(hours=1)
    # The same signature on another object (of another customer, or beside it) is refused.
    name = presigned.blob_uri.removeprefix(f"gs://{BUCKET}/")
    for other in (name.replace("/acme/", "/globex/"), name.replace("/uploads/", "/uploads/x")):
        url = presigned.url.replace(quote(name), quote(other))
        answer = requests.put(url, data=users_csv(1), timeout=30)
        assert answer.status_code == 403 and "SignatureDoesNotMatch" in answer.text, answer.text
        assert not list(gcs_stack.client.list_blobs(BUCKET, prefix=other))
    short = blob.presign("acme", "late.csv", "gcs", gcs_stack.config, expires_in=1)
    until(lambda: datetime.now(UTC) > short.expires_at, timeout=5)
    answer = requests.put(short.url, data=users_csv(1), timeout=30)
    assert answer.status_code == 403 and "ExpiredToken" in answer.text, answer.text


def test_presign_refuses_a_customer_without_a_gcs_area_naming_store(gcs_stack: GcsStack) -> None:
    with pytest.raises(RequestRefused) as refused:
        blob.presign("plain", "u.csv", "gcs", gcs_stack.config)
    assert refused.value.field == "store"
    assert "customer 'plain' has no GCS area" in str(refused.value)


def test_presign_without_google_credentials_is_refused_naming_the_object_only(
    gcs_stack: GcsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(gcs_stack.tmp / "no-such-key.json"))
    with pytest.raises(BlobRefused) as refused:
        blob.presign("acme", "u.csv", "gcs", gcs_stack.config)
    says = f"no Google credentials are configured to sign an upload URL for gs://{BUCKET}/{PREFIX}/acme/uploads/"
    assert says in str(refused.value)
    assert "no-such-key" not in str(refused.value)


def test_a_tus_upload_of_a_customer_whose_uploads_go_to_gcs_lands_there_and_imports(gcs_stack: GcsStack) -> None:
    """SPEC 19: an upload goes straight to the customer's own area, in parts, when its "uploads" names it."""
    assert_uploads_land_in_the_store(gcs_stack, "gs", users_csv(UPLOAD_ROWS), UPLOAD_ROWS)
    left = [found.name for found in gcs_stack.client.list_blobs(BUCKET, prefix=f"{PREFIX}/globex/uploads/")]
    assert not [name for name in left if ".parts/" in name], left  # every part object deleted


def test_a_feed_imports_each_object_version_once_and_moves_it_after(
    gcs_stack: GcsStack,
) -> None:
    """SPEC 20: a feed on a prefix of the customer's gs:// area."""
    assert_feeds_import_each_version_once(gcs_stack, f"gs://{BUCKET}/{PREFIX}/acme/")
