"""az:// blobs (SPEC 18, to the letter of SPEC 17) against Azurite, the Azure Storage emulator
(npm package `azurite`, pinned in package.json; `npm ci` runs here when node_modules lacks it),
on 127.0.0.1 behind a proxy that counts the bytes each GET sends back, with real
`importctl worker` processes reading from it."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

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
from tests.e2e.test_faults import end, start_supervisor
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

ACCOUNT = "importsacct"
# The account key Azurite is started with (AZURITE_ACCOUNTS); it must never show.
ACCOUNT_KEY = base64.b64encode(b"azurite-account-key-never-shown!").decode()
CONTAINER = "imports"
PREFIX = "landing"
BIG_ROWS = 300_000
KILL_ROWS = 200_000
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
IMPORTCTL = str(Path(sys.executable).parent / "importctl")
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}


def azurite_binary() -> Path:
    """Azurite from the repo's package.json and package-lock.json (`npm ci` when it is missing)."""
    if AZURITE.exists():
        return AZURITE
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "the Azure tests run Azurite (npm package azurite, pinned in package.json), and npm is missing: "
            "install Node.js 20+ with npm (e.g. sudo apt-get install nodejs npm), then run `npm ci` in the repo"
        )
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and AZURITE.exists(), f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return AZURITE


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a worker SIGKILLed mid-request
            super().handle_error(request, client_address)


class CountingProxy:
    """An HTTP proxy in front of Azurite recording every GET (its path, x-ms-range and the bytes
    sent back) and every HEAD (its path)."""

    def __init__(self, upstream_port: int) -> None:
        self.lock = threading.Lock()
        self.gets: list[tuple[str, str | None, int]] = []
        self.heads: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                answer_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP]
                for name, value in answer_headers:
                    self.send_header(name, value)
                if not any(k.lower() == "content-length" for k, _ in answer_headers):
                    self.send_header("Content-Length", str(len(data)))
                with contextlib.suppress(ConnectionError):  # a worker SIGKILLed mid-read
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                with proxy.lock:
                    path = self.path.split("?")[0]
                    if self.command == "GET":
                        ranged = self.headers.get("x-ms-range") or self.headers.get("Range")
                        proxy.gets.append((path, ranged, len(data)))
                    elif self.command == "HEAD":
                        proxy.heads.append(path)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fetched(self, name: str) -> list[tuple[str | None, int]]:
        with self.lock:
            return [(ranged, sent) for path, ranged, sent in self.gets if path == f"/{ACCOUNT}/{CONTAINER}/{name}"]

    def headed(self, name: str) -> list[str]:
        with self.lock:
            return [path for path in self.heads if path == f"/{ACCOUNT}/{CONTAINER}/{name}"]


@dataclass
class AzureStack:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    products: ProductRegistry
    service: Any  # a BlobServiceClient straight to Azurite
    proxy: CountingProxy
    account_url: str
    dead_account_url: str
    tmp: Path
    worker_log: Path
    big_name: str = ""
    kill_name: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def put(self, customer: str, name: str, body: bytes, container: str = CONTAINER) -> str:
        path = f"{PREFIX}/{customer}/{name}"
        self.service.get_blob_client(container, path).upload_blob(body, overwrite=True)
        return path

    def request(self, customer: str, uri: str) -> EnqueueRequest:
        return check_request(
            {"customer_id": customer, "product_type": "users", "blob_uri": uri}, self.config, self.products
        )

    def enqueue(self, customer: str, path: str) -> str:
        job, _ = enqueue(self.request(customer, f"az://{CONTAINER}/{path}"), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 240) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def rows(self, customer: str, job_id: str) -> tuple[int, int]:
        sql = "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s"
        (row,) = query(self.customers[customer], sql, (job_id,))
        return row

    def shows_no_credential(self, job: Job) -> None:
        """The job's view, its log lines and the workers' log never show the account key."""
        logged = " ".join(m for (m,) in query(self.app, "SELECT message FROM import_logs WHERE job_id = %s", (job.id,)))
        texts = {"job view": json.dumps(job_view(job)), "job log": logged, "workers' log": self.worker_log.read_text()}
        for where, text in texts.items():
            assert ACCOUNT_KEY not in text, where
            assert "AccountKey" not in text and "sig=" not in text, where


# Rows of a file of three upload parts (blob.PART_BYTES each but the last).
UPLOAD_ROWS = 170_000


def users_csv(rows: int) -> bytes:
    lines = [HEADER] + [
        f"u{i},user{i}@example.com,Zoë,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n" for i in range(1, rows + 1)
    ]
    return "".join(lines).encode()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Azurite's blob service on 127.0.0.1 (a free port, a temp folder), with one account."""
    binary = azurite_binary()
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    command = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(folder)]
    command += ["--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    env = dict(os.environ, AZURITE_ACCOUNTS=f"{ACCOUNT}:{ACCOUNT_KEY}")
    log = folder / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
    try:
        until(lambda: listening(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, f"Azurite did not start: {log.read_text()}"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def azure_stack(databases: Databases, azurite: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureStack]:
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{azurite}/{ACCOUNT};"
    )
    proxy = CountingProxy(azurite)
    account_url = f"http://127.0.0.1:{proxy.port}/{ACCOUNT}"
    dead_account_url = f"http://127.0.0.1:{free_port()}/{ACCOUNT}"
    app = databases.create("app")
    customers = {name: databases.create(name) for name in ("acme", "globex", "plain", "dead")}
    area = {"account_url": account_url, "container": CONTAINER, "prefix": PREFIX}
    mapping: dict[str, Any] = {
        "acme": {"dsn": customers["acme"], "azure": area},
        "globex": {"dsn": customers["globex"], "azure": area, "uploads": "azure"},  # SPEC 19
        "plain": customers["plain"],
        "dead": {"dsn": customers["dead"], "azure": dict(area, account_url=dead_account_url)},
    }
    tmp = tmp_path_factory.mktemp("azure")
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
        AZURE_STORAGE_CONNECTION_STRING=connection,
        LOG_LEVEL="DEBUG",  # the workers' log is searched for the key: let every library speak
    )
    dsns, settings = load_customers(tmp / "customer_map.json")
    config = Config(
        app_db_dsn=app,
        blob_root=root,
        customers=dsns,
        customer_settings=settings,
        azure_storage_connection_string=connection,
    )
    service = BlobServiceClient.from_connection_string(connection)
    service.create_container(CONTAINER)
    service.create_container("other")
    jobs = JobStore(app, dispatch=dispatch)
    products = ProductRegistry.load(config.schemas_dir)
    worker_log = tmp / "workers.log"
    stack = AzureStack(
        env, app, customers, config, jobs, products, service, proxy, account_url, dead_account_url, tmp, worker_log
    )
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


def test_a_large_csv_in_azure_is_imported_once_with_chunks_reading_only_their_ranges(azure_stack: AzureStack) -> None:
    size = azure_stack.service.get_blob_client(CONTAINER, azure_stack.big_name).get_blob_properties().size
    before = len(azure_stack.proxy.fetched(azure_stack.big_name))
    heads_before = len(azure_stack.proxy.headed(azure_stack.big_name))
    job_id = azure_stack.enqueue("acme", azure_stack.big_name)
    job = azure_stack.wait(job_id)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (BIG_ROWS, BIG_ROWS, BIG_ROWS)
    assert azure_stack.rows("acme", job_id) == (BIG_ROWS, BIG_ROWS)
    gets = azure_stack.proxy.fetched(azure_stack.big_name)[before:]
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
    # The enqueue and fetch get the blob's properties (a HEAD); the chunks do not (their GETs carry the ETag).
    assert len(azure_stack.proxy.headed(azure_stack.big_name)) - heads_before <= 2
    azure_stack.shows_no_credential(job)


def test_an_xlsx_in_azure_is_imported(azure_stack: AzureStack) -> None:
    name = azure_stack.put("acme", "users.xlsx", (ROOT / "sample" / "acme" / "users-xlsx.xlsx").read_bytes())
    job = azure_stack.wait(azure_stack.enqueue("acme", name), timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (6, 5, 1)
    assert azure_stack.rows("acme", job.id) == (5, 5)


def test_a_missing_blob_is_refused_at_enqueue(azure_stack: AzureStack) -> None:
    with pytest.raises(RequestRefused) as refused:
        azure_stack.request("acme", f"az://{CONTAINER}/{PREFIX}/acme/nothing-here.csv")
    assert refused.value.field == "blob_uri"
    assert f"no object at az://{CONTAINER}/{PREFIX}/acme/nothing-here.csv" in str(refused.value)


def test_a_blob_over_max_file_bytes_is_refused_at_enqueue_without_reading_it(azure_stack: AzureStack) -> None:
    name = azure_stack.put("acme", "too-big.csv", users_csv(50))
    before = len(azure_stack.proxy.fetched(name))
    body = {"customer_id": "acme", "product_type": "users", "blob_uri": f"az://{CONTAINER}/{name}"}
    with pytest.raises(RequestRefused) as refused:
        check_request(body, azure_stack.config.with_(max_file_bytes=1000), azure_stack.products)
    assert refused.value.field == "blob_uri"
    assert "over the max_file_bytes limit (1000 bytes)" in str(refused.value)
    assert len(azure_stack.proxy.fetched(name)) == before, "only its properties were read"


@pytest.mark.parametrize(
    ("customer", "uri", "says"),
    [
        ("acme", f"az://{CONTAINER}/{PREFIX}/acme/../globex/u.csv", "'..' segments"),
        ("acme", f"az://{CONTAINER}/{PREFIX}/globex/u.csv", "outside the Azure area of customer 'acme'"),
        ("acme", f"az://other/{PREFIX}/acme/u.csv", "may read only 'imports'"),
        ("acme", f"az://Bad_Container/{PREFIX}/acme/u.csv", "not a valid container name"),
        ("acme", f"az://{CONTAINER}/{PREFIX}/acme/{'k' * 1100}.csv", "over Azure's limit of 1024"),
        ("plain", f"az://{CONTAINER}/{PREFIX}/plain/u.csv", "it has no Azure area"),
    ],
)
def test_an_az_uri_outside_the_customers_area_is_a_400_naming_blob_uri(
    azure_stack: AzureStack, customer: str, uri: str, says: str
) -> None:
    # The blobs exist: only the confinement refuses them.
    azure_stack.put("globex", "u.csv", users_csv(2))
    azure_stack.put("acme", "u.csv", users_csv(2), container="other")
    azure_stack.put("plain", "u.csv", users_csv(2))
    with pytest.raises(RequestRefused) as refused:
        azure_stack.request(customer, uri)
    assert refused.value.field == "blob_uri"
    assert says in str(refused.value)


def test_a_blob_replaced_during_the_import_fails_the_job_saying_the_file_changed(azure_stack: AzureStack) -> None:
    name = azure_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS))
    job_id = azure_stack.enqueue("acme", name)
    until(lambda: query(azure_stack.app, "SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))[0][0] > 0)
    azure_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS).replace(b"student", b"teacher"))
    job = azure_stack.wait(job_id)
    assert job.status == "failed"
    assert "the file changed while it was being imported" in (job.error or "")
    until(lambda: azure_stack.rows("acme", job_id) == (0, 0), timeout=30)


def test_a_blob_that_vanishes_after_enqueue_fails_the_job_naming_it(azure_stack: AzureStack) -> None:
    name = azure_stack.put("acme", "vanishing.csv", users_csv(3))
    request = azure_stack.request("acme", f"az://{CONTAINER}/{name}")
    azure_stack.service.get_blob_client(CONTAINER, name).delete_blob()
    job, _ = enqueue(request, azure_stack.jobs)
    job = azure_stack.wait(job.id, timeout=60)
    assert job.status == "failed"
    assert f"no object at az://{CONTAINER}/{name}" in (job.error or "")


def test_an_unreachable_azure_is_retried_then_fails_the_job_naming_the_endpoint_not_the_credentials(
    azure_stack: AzureStack,
) -> None:
    uri = f"az://{CONTAINER}/{PREFIX}/dead/u.csv"
    with pytest.raises(BlobUnavailable):  # at enqueue: no job (REST answers 503)
        azure_stack.request("dead", uri)
    job, _ = azure_stack.jobs.create_job("dead", "users", uri, {})  # as if Azure went down after the enqueue
    job = azure_stack.wait(job.id, timeout=90)
    assert job.status == "failed"
    error = job.error or ""
    assert f"the Azure endpoint {azure_stack.dead_account_url} cannot be reached" in error
    assert "gave up after" in error
    assert f"the Azure endpoint {azure_stack.dead_account_url} cannot be reached" in azure_stack.worker_log.read_text()
    azure_stack.shows_no_credential(job)


def test_a_worker_killed_mid_job_leaves_every_row_exactly_once(azure_stack: AzureStack) -> None:
    job_id = azure_stack.enqueue("acme", azure_stack.kill_name)
    job = assert_killed_workers_lose_nothing(
        azure_stack, azure_stack.app, azure_stack.workers[0].pid, job_id, KILL_ROWS
    )
    azure_stack.shows_no_credential(job)


def test_importctl_enqueue_file_uploads_into_the_customers_azure_area(azure_stack: AzureStack) -> None:
    source = azure_stack.tmp / "local users.csv"
    source.write_bytes(users_csv(7))
    command = [IMPORTCTL, "enqueue", "--customer=globex", "--product=users", f"--file={source}", "--wait"]
    result = subprocess.run(command, env=azure_stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    job = azure_stack.jobs.get(result.stdout.strip())
    assert job is not None and job.status == "succeeded", job
    assert job.blob_uri.startswith(f"az://{CONTAINER}/{PREFIX}/globex/uploads/")
    assert job.blob_uri.endswith("-local users.csv")
    name = job.blob_uri.removeprefix(f"az://{CONTAINER}/")
    assert azure_stack.service.get_blob_client(CONTAINER, name).download_blob().readall() == users_csv(7)
    assert not any((azure_stack.config.blob_root / "globex").rglob("*")), "nothing copied into the file blob area"
    assert azure_stack.rows("globex", job.id) == (7, 7)
    assert ACCOUNT_KEY not in result.stdout + result.stderr
    azure_stack.shows_no_credential(job)


def test_compressed_and_zipped_objects_import_as_the_plain_one(azure_stack: AzureStack) -> None:
    assert_packed_files_import(azure_stack, "az", users_csv(3_000), 3_000)


def test_a_presigned_url_takes_a_file_that_imports_through_its_blob_uri(azure_stack: AzureStack) -> None:
    body = users_csv(5)
    presigned = blob.presign("acme", "new users.csv", "azure", azure_stack.config)
    assert presigned.method == "PUT" and presigned.headers == {"x-ms-blob-type": "BlockBlob"}
    assert presigned.blob_uri.startswith(f"az://{CONTAINER}/{PREFIX}/acme/uploads/")
    assert re.fullmatch(r"[0-9a-f]{12}-new users\.csv", presigned.blob_uri.rsplit("/", 1)[1])
    name = presigned.blob_uri.removeprefix(f"az://{CONTAINER}/")
    assert presigned.url.startswith(f"{azure_stack.account_url}/{CONTAINER}/{quote(name)}?")
    assert parse_qs(urlsplit(presigned.url).query)["sp"] == ["cw"], "create and write, nothing else"
    assert ACCOUNT_KEY not in presigned.url and presigned.url not in repr(presigned)
    answer = requests.put(presigned.url, data=body, headers=presigned.headers, timeout=30)
    assert answer.status_code == 201, answer.text
    found, size, _ = blob.check(blob.locate(presigned.blob_uri, "acme", azure_stack.config), 1 << 20)
    assert size == len(body)
    job, _ = enqueue(azure_stack.request("acme", presigned.blob_uri), azure_stack.jobs)
    job = azure_stack.wait(job.id, timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (5, 5, 5)
    assert azure_stack.rows("acme", job.id) == (5, 5)
    azure_stack.shows_no_credential(job)


def test_a_presigned_url_expires_within_an_hour_and_writes_only_its_own_blob(azure_stack: AzureStack) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    presigned = blob.presign("acme", "u.csv", "azure", azure_stack.config, expires_in=7 * 24 * 3600)
    after = datetime.now(UTC)
    (expiry,) = parse_qs(urlsplit(presigned.url).query)["se"]
    assert datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) == presigned.expires_at
    assert before + timedelta(hours=1) <= presigned.expires_at <= after + timedelta(hours=1)
    # Azurite checks the SAS: the same one on another blob (of another customer, or beside it) is refused.
    name = presigned.blob_uri.removeprefix(f"az://{CONTAINER}/")
    for other in (name.replace("/acme/", "/globex/"), name.replace("/uploads/", "/uploads/x")):
        url = presigned.url.replace(quote(name), quote(other))
        answer = requests.put(url, data=users_csv(1), headers=presigned.headers, timeout=30)
        assert answer.status_code == 403 and "AuthorizationFailure" in answer.text, answer.text
        assert not list(azure_stack.service.get_container_client(CONTAINER).list_blobs(name_starts_with=other))
    # And a SAS past its expiry.
    short = blob.presign("acme", "late.csv", "azure", azure_stack.config, expires_in=1)
    until(lambda: datetime.now(UTC) > short.expires_at + timedelta(seconds=1), timeout=5)
    answer = requests.put(short.url, data=users_csv(1), headers=short.headers, timeout=30)
    assert answer.status_code == 403, answer.text


def test_presign_refuses_a_customer_without_an_azure_area_naming_store(azure_stack: AzureStack) -> None:
    with pytest.raises(RequestRefused) as refused:
        blob.presign("plain", "u.csv", "azure", azure_stack.config)
    assert refused.value.field == "store"
    assert "customer 'plain' has no Azure area" in str(refused.value)


@pytest.mark.parametrize("credential", ["sas", "none"])
def test_presign_without_an_account_key_or_entra_credential_is_refused_showing_no_secret(
    azure_stack: AzureStack, credential: str
) -> None:
    sas = "sv=2024-08-04&ss=b&srt=sco&sp=rwc&se=2099-01-01T00:00:00Z&sig=c2FzLXNpZ25hdHVyZS1uZXZlci1zaG93bg%3D%3D"
    connection = f"BlobEndpoint={azure_stack.account_url};SharedAccessSignature={sas}" if credential == "sas" else None
    config = azure_stack.config.with_(azure_storage_connection_string=connection)
    with pytest.raises(BlobRefused) as refused:
        blob.presign("acme", "u.csv", "azure", config)
    assert f"cannot sign an upload URL for az://{CONTAINER}/{PREFIX}/acme/uploads/" in str(refused.value)
    assert "an account key in AZURE_STORAGE_CONNECTION_STRING" in str(refused.value)
    assert "sig=" not in str(refused.value) and "c2FzLXNpZ25hdHVyZS" not in str(refused.value)


def test_a_tus_upload_of_a_customer_whose_uploads_go_to_azure_lands_there_and_imports(azure_stack: AzureStack) -> None:
    """SPEC 19: an upload goes straight to the customer's own area, in parts, when its "uploads" names it."""
    assert_uploads_land_in_the_store(azure_stack, "az", users_csv(UPLOAD_ROWS), UPLOAD_ROWS)


def test_a_feed_imports_each_object_version_once_and_moves_it_after(
    azure_stack: AzureStack,
) -> None:
    """SPEC 20: a feed on a prefix of the customer's az:// area."""
    assert_feeds_import_each_version_once(azure_stack, f"az://{CONTAINER}/{PREFIX}/acme/")
