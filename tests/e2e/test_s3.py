"""s3:// blobs (SPEC 17) against a real S3-compatible HTTP server on 127.0.0.1 (moto's server,
run here behind a WSGI wrapper that counts the bytes each GET sends back), with real
`dramatiq actors` / `importctl worker` processes reading from it.

moto ignores the signature of a presigned URL (it checks only an Authorization header, and only
when asked to); the wrapper checks it as S3 does, from the request alone and the test's secret
key (SigV4 query-string auth: canonical request, string to sign, HMAC key chain, expiry), and
refuses (403) what S3 would refuse."""

from __future__ import annotations

import hmac
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

import boto3
import pytest
import requests
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from service.config import Config, load_customers
from service.errors import BlobRefused, BlobUnavailable, RequestRefused
from service.schema.products import ProductRegistry
from service.sources import blob
from service.sources import s3 as s3_source
from service.sources.ranged import HEAD_BYTES, READ_BYTES
from service.stages.enqueue import EnqueueRequest, check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from tests.conftest import ROOT, Databases, query, until, wait_finished
from tests.e2e.conftest import free_port, stop, wait_for_port
from tests.e2e.packed import (
    assert_feeds_import_each_version_once,
    assert_killed_workers_lose_nothing,
    assert_packed_files_import,
    assert_uploads_land_in_the_store,
)
from tests.e2e.test_faults import end, start_supervisor
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

BUCKET = "imports-bucket"
PREFIX = "landing"
KEY_ID = "AKIATESTKEYID0000000"
SECRET = "s3cret-Access-Key-never-shown"
BIG_ROWS = 1_000_000
KILL_ROWS = 200_000
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
IMPORTCTL = str(Path(sys.executable).parent / "importctl")


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str], signature: str) -> str:
    """The canonical request of a presigned URL's request (AWS SigV4 query-string auth; GCS V4
    signing is the same): its method, path and query (percent-encoded once, the query sorted, the
    signature left out), the headers it names as signed, and an unsigned payload. headers: by
    lowercase name."""
    pairs = [(quote(k, safe="~"), quote(v, safe="~")) for k, v in parse_qsl(query, keep_blank_values=True)]
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs) if k != signature)
    prefix = signature.rsplit("-", 1)[0]  # X-Amz, X-Goog
    signed = parse_qs(query)[f"{prefix}-SignedHeaders"][0].split(";")
    lines = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    return "\n".join(
        [method, quote(unquote(path), safe="/~"), canonical_query, lines, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )


def signed_expiry(url: str, prefix: str) -> datetime:
    """When a presigned URL stops working, read from its own query: <prefix>-Date + <prefix>-Expires."""
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query[f"{prefix}-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed_at + timedelta(seconds=int(query[f"{prefix}-Expires"][0]))


def sigv4_refusal(method: str, uri: str, headers: Mapping[str, str]) -> str | None:
    """Why S3 would refuse this presigned request, or None: SigV4 query-string auth with the test's
    key (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html)."""
    path, _, query = uri.partition("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or "X-Amz-Signature" not in params:
        return "AccessDenied: not a SigV4 presigned request"
    key_id, *scope = params["X-Amz-Credential"].split("/")
    if key_id != KEY_ID:
        return "InvalidAccessKeyId"
    if not 1 <= int(params["X-Amz-Expires"]) <= 604800:
        return "AuthorizationQueryParametersError: X-Amz-Expires"
    if datetime.now(UTC) > signed_expiry(f"?{query}", "X-Amz"):
        return "AccessDenied: Request has expired"
    canonical = canonical_request(method, path, query, headers, "X-Amz-Signature")
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], "/".join(scope), sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET}".encode()
    for part in scope:
        key = hmac.new(key, part.encode(), sha256).digest()
    expected = hmac.new(key, to_sign.encode(), sha256).hexdigest()
    return None if hmac.compare_digest(expected, params["X-Amz-Signature"]) else "SignatureDoesNotMatch"


class CountingApp:
    """moto's WSGI app, counting the response bytes of every GET (and its Range header) per path,
    and the HEADs; a presigned request (a signature in its query) is checked first, as S3 checks
    it, and recorded with why it was refused (None: let through)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.gets: list[tuple[str, str | None, int]] = []  # (path, Range, bytes sent)
        self.heads: list[str] = []  # paths
        self.presigned: list[tuple[str, str, str | None]] = []  # (method, path, refusal)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        if "Signature=" in environ.get("QUERY_STRING", ""):
            uri = environ["RAW_URI"].encode("latin-1").decode()
            headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
            headers.update({k.lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("CONTENT_")})
            refusal = sigv4_refusal(environ["REQUEST_METHOD"], uri, headers)
            with self.lock:
                self.presigned.append((environ["REQUEST_METHOD"], unquote(uri.partition("?")[0]), refusal))
            if refusal is not None:
                start_response("403 Forbidden", [("Content-Type", "application/xml")])
                yield f"<Error><Code>{refusal.split(':')[0]}</Code><Message>{refusal}</Message></Error>".encode()
                return
        sent = 0
        try:
            for piece in self.app(environ, start_response):
                sent += len(piece)
                yield piece
        finally:
            with self.lock:
                if environ["REQUEST_METHOD"] == "GET":
                    self.gets.append((environ["PATH_INFO"], environ.get("HTTP_RANGE"), sent))
                elif environ["REQUEST_METHOD"] == "HEAD":
                    self.heads.append(environ["PATH_INFO"])

    def fetched(self, key: str) -> list[tuple[str | None, int]]:
        with self.lock:
            return [(ranged, sent) for path, ranged, sent in self.gets if path == f"/{BUCKET}/{key}"]


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class S3Stack:
    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    products: ProductRegistry
    s3: Any
    counter: CountingApp
    endpoint: str
    dead_endpoint: str
    tmp: Path
    big_key: str = ""
    kill_key: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def put(self, customer: str, name: str, body: bytes) -> str:
        key = f"{PREFIX}/{customer}/{name}"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return key

    def request(self, customer: str, uri: str) -> EnqueueRequest:
        return check_request(
            {"customer_id": customer, "product_type": "users", "blob_uri": uri}, self.config, self.products
        )

    def enqueue(self, customer: str, key: str) -> str:
        job, _ = enqueue(self.request(customer, f"s3://{BUCKET}/{key}"), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 240) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def rows(self, customer: str, job_id: str) -> tuple[int, int]:
        sql = "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s"
        (row,) = query(self.customers[customer], sql, (job_id,))
        return row


# Rows of a file of three upload parts (blob.PART_BYTES each but the last).
UPLOAD_ROWS = 170_000


def users_csv(rows: int) -> bytes:
    lines = [HEADER] + [
        f"u{i},user{i}@example.com,Zoë,Müller,student,{i % 90},yes,2024-03-01T09:30:00Z\n" for i in range(1, rows + 1)
    ]
    return "".join(lines).encode()


@pytest.fixture(scope="module")
def s3_stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Stack]:
    credentials = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)  # this process enqueues too (check_request HEADs the object)
    counter = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counter, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    app = databases.create("app")
    customers = {name: databases.create(name) for name in ("acme", "globex", "plain", "dead")}
    area = {"bucket": BUCKET, "prefix": PREFIX, "endpoint_url": endpoint, "region": "us-east-1"}
    mapping: dict[str, Any] = {
        "acme": {"dsn": customers["acme"], "s3": area},
        "globex": {"dsn": customers["globex"], "s3": area, "uploads": "s3"},  # SPEC 19: presigned uploads
        "plain": customers["plain"],
        "dead": {"dsn": customers["dead"], "s3": dict(area, endpoint_url=dead_endpoint)},
    }
    tmp = tmp_path_factory.mktemp("s3")
    root = tmp / "blobs"
    for name in mapping:
        (root / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(mapping))
    migrate(app)
    env = pipeline_env(
        app, tmp / "customer_map.json", root, CUSTOMER_DB_RETRY_SECONDS="6", WORKER_CONCURRENCY="4", **credentials
    )
    dsns, settings = load_customers(tmp / "customer_map.json")
    config = Config(app_db_dsn=app, blob_root=root, customers=dsns, customer_settings=settings)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket="other-bucket")
    jobs = JobStore(app, dispatch=dispatch)
    products = ProductRegistry.load(config.schemas_dir)
    stack = S3Stack(env, app, customers, config, jobs, products, client, counter, endpoint, dead_endpoint, tmp)
    stack.big_key = stack.put("acme", "big.csv", users_csv(BIG_ROWS))
    stack.kill_key = stack.put("acme", "kill.csv", users_csv(KILL_ROWS))
    stack.workers.append(start_supervisor(env))
    try:
        yield stack
    finally:
        for process in stack.workers:
            end(process)
        jobs.close()
        server.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_a_million_row_csv_in_s3_is_imported_once_with_chunks_reading_only_their_ranges(s3_stack: S3Stack) -> None:
    size = s3_stack.s3.head_object(Bucket=BUCKET, Key=s3_stack.big_key)["ContentLength"]
    before = len(s3_stack.counter.fetched(s3_stack.big_key))
    heads_before = len(s3_stack.counter.heads)
    job_id = s3_stack.enqueue("acme", s3_stack.big_key)
    job = s3_stack.wait(job_id)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (BIG_ROWS, BIG_ROWS, BIG_ROWS)
    assert s3_stack.rows("acme", job_id) == (BIG_ROWS, BIG_ROWS)
    gets = s3_stack.counter.fetched(s3_stack.big_key)[before:]
    chunks = job.chunks_total or 0
    fetched = sum(sent for _, sent in gets)
    print(
        f"\n1M-row file: {size:,} bytes, {chunks} chunks, {len(gets)} GETs, {fetched:,} bytes fetched "
        f"({fetched / size:.2f} x the file: one scan by fetch + each chunk its own range)"
    )
    assert chunks > 10
    assert all(ranged and ranged.startswith("bytes=") for ranged, _ in gets), "every GET is a ranged GET"
    assert max(sent for _, sent in gets) <= READ_BYTES
    # fetch scans the whole file once (it cuts the chunks); then each chunk reads its own range,
    # plus the first bytes (the BOM sniff) and at most one read's worth past its end.
    assert fetched <= 2 * size + (chunks + 2) * (READ_BYTES + HEAD_BYTES)
    # The enqueue and fetch HEAD the object; the chunks do not (their GETs carry the ETag).
    heads = [path for path in s3_stack.counter.heads[heads_before:] if path == f"/{BUCKET}/{s3_stack.big_key}"]
    assert len(heads) <= 2, heads


def test_an_xlsx_in_s3_is_imported(s3_stack: S3Stack) -> None:
    key = s3_stack.put("acme", "users.xlsx", (ROOT / "sample" / "acme" / "users-xlsx.xlsx").read_bytes())
    job = s3_stack.wait(s3_stack.enqueue("acme", key), timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (6, 5, 1)
    assert s3_stack.rows("acme", job.id) == (5, 5)


def test_a_missing_object_is_refused_at_enqueue(s3_stack: S3Stack) -> None:
    with pytest.raises(RequestRefused) as refused:
        s3_stack.request("acme", f"s3://{BUCKET}/{PREFIX}/acme/nothing-here.csv")
    assert refused.value.field == "blob_uri"
    assert f"no object at s3://{BUCKET}/{PREFIX}/acme/nothing-here.csv" in str(refused.value)


@pytest.mark.parametrize(
    ("customer", "uri", "says"),
    [
        ("acme", f"s3://{BUCKET}/{PREFIX}/acme/../globex/u.csv", "'..' segments"),
        ("acme", f"s3://{BUCKET}/{PREFIX}/globex/u.csv", "outside the S3 area of customer 'acme'"),
        ("acme", f"s3://other-bucket/{PREFIX}/acme/u.csv", "may read only 'imports-bucket'"),
        ("acme", f"s3://Bad_Bucket/{PREFIX}/acme/u.csv", "not a valid bucket name"),
        ("acme", f"s3://{BUCKET}/{PREFIX}/acme/{'k' * 1100}.csv", "over S3's limit of 1024"),
        ("plain", f"s3://{BUCKET}/{PREFIX}/plain/u.csv", "it has no S3 area"),
    ],
)
def test_an_s3_uri_outside_the_customers_area_is_a_400_naming_blob_uri(
    s3_stack: S3Stack, customer: str, uri: str, says: str
) -> None:
    # The objects exist: only the confinement refuses them.
    s3_stack.put("globex", "u.csv", users_csv(2))
    s3_stack.s3.put_object(Bucket="other-bucket", Key=f"{PREFIX}/acme/u.csv", Body=users_csv(2))
    with pytest.raises(RequestRefused) as refused:
        s3_stack.request(customer, uri)
    assert refused.value.field == "blob_uri"
    assert says in str(refused.value)


def test_an_object_replaced_during_the_import_fails_the_job_saying_the_file_changed(s3_stack: S3Stack) -> None:
    key = s3_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS))
    job_id = s3_stack.enqueue("acme", key)
    until(lambda: query(s3_stack.app, "SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))[0][0] > 0)
    s3_stack.put("acme", "replaced.csv", users_csv(KILL_ROWS).replace(b"student", b"teacher"))
    job = s3_stack.wait(job_id)
    assert job.status == "failed"
    assert "the file changed while it was being imported" in (job.error or "")
    until(lambda: s3_stack.rows("acme", job_id) == (0, 0), timeout=30)


def test_an_object_that_vanishes_after_enqueue_fails_the_job_naming_it(s3_stack: S3Stack) -> None:
    key = s3_stack.put("acme", "vanishing.csv", users_csv(3))
    request = s3_stack.request("acme", f"s3://{BUCKET}/{key}")
    s3_stack.s3.delete_object(Bucket=BUCKET, Key=key)
    job, _ = enqueue(request, s3_stack.jobs)
    job = s3_stack.wait(job.id, timeout=60)
    assert job.status == "failed"
    assert f"no object at s3://{BUCKET}/{key}" in (job.error or "")


def test_an_unreachable_s3_is_retried_then_fails_the_job_naming_the_endpoint_not_the_credentials(
    s3_stack: S3Stack,
) -> None:
    uri = f"s3://{BUCKET}/{PREFIX}/dead/u.csv"
    with pytest.raises(BlobUnavailable):  # at enqueue: no job (REST answers 503)
        s3_stack.request("dead", uri)
    job, _ = s3_stack.jobs.create_job("dead", "users", uri, {})  # as if S3 went down after the enqueue
    job = s3_stack.wait(job.id, timeout=90)
    assert job.status == "failed"
    error = job.error or ""
    assert f"the S3 endpoint {s3_stack.dead_endpoint} cannot be reached" in error
    assert "gave up after" in error
    logged = " ".join(m for (m,) in query(s3_stack.app, "SELECT message FROM import_logs WHERE job_id = %s", (job.id,)))
    for text in (error, logged):
        assert SECRET not in text and KEY_ID not in text


def test_a_worker_killed_mid_job_leaves_every_row_exactly_once(s3_stack: S3Stack) -> None:
    job_id = s3_stack.enqueue("acme", s3_stack.kill_key)
    assert_killed_workers_lose_nothing(s3_stack, s3_stack.app, s3_stack.workers[0].pid, job_id, KILL_ROWS)


def test_importctl_enqueue_file_uploads_into_the_customers_s3_area(s3_stack: S3Stack) -> None:
    source = s3_stack.tmp / "local users.csv"
    source.write_bytes(users_csv(7))
    command = [IMPORTCTL, "enqueue", "--customer=globex", "--product=users", f"--file={source}", "--wait"]
    result = subprocess.run(command, env=s3_stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    job = s3_stack.jobs.get(result.stdout.strip())
    assert job is not None and job.status == "succeeded", job
    assert job.blob_uri.startswith(f"s3://{BUCKET}/{PREFIX}/globex/uploads/")
    assert job.blob_uri.endswith("-local users.csv")
    key = job.blob_uri.removeprefix(f"s3://{BUCKET}/")
    assert s3_stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == users_csv(7)
    assert not any((s3_stack.config.blob_root / "globex").rglob("*")), "nothing copied into the file blob area"
    assert s3_stack.rows("globex", job.id) == (7, 7)


def test_compressed_and_zipped_objects_import_as_the_plain_one(s3_stack: S3Stack) -> None:
    assert_packed_files_import(s3_stack, "s3", users_csv(3_000), 3_000)


def test_a_presigned_url_takes_a_file_that_imports_through_its_blob_uri(s3_stack: S3Stack) -> None:
    body = users_csv(5)
    presigned = blob.presign("acme", "C:\\exports\\new users.csv", "s3", s3_stack.config)
    assert presigned.method == "PUT" and presigned.headers == {}
    assert presigned.blob_uri.startswith(f"s3://{BUCKET}/{PREFIX}/acme/uploads/")
    assert re.fullmatch(r"[0-9a-f]{12}-new users\.csv", presigned.blob_uri.rsplit("/", 1)[1])
    key = presigned.blob_uri.removeprefix(f"s3://{BUCKET}/")
    assert presigned.url.startswith(f"{s3_stack.endpoint}/{BUCKET}/{quote(key)}?")
    assert SECRET not in presigned.url and presigned.url not in repr(presigned)
    answer = requests.put(presigned.url, data=body, headers=presigned.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert s3_stack.counter.presigned[-1] == ("PUT", f"/{BUCKET}/{key}", None), "signed as S3 checks it"
    found, size, _ = blob.check(blob.locate(presigned.blob_uri, "acme", s3_stack.config), 1 << 20)
    assert size == len(body)
    job, _ = enqueue(s3_stack.request("acme", presigned.blob_uri), s3_stack.jobs)
    job = s3_stack.wait(job.id, timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (5, 5, 5)
    assert s3_stack.rows("acme", job.id) == (5, 5)


def test_a_presigned_url_expires_within_an_hour_and_writes_only_its_own_key(s3_stack: S3Stack) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    presigned = blob.presign("acme", "u.csv", "s3", s3_stack.config, expires_in=7 * 24 * 3600)
    after = datetime.now(UTC)
    assert parse_qs(urlsplit(presigned.url).query)["X-Amz-Expires"] == ["3600"]
    assert signed_expiry(presigned.url, "X-Amz") == presigned.expires_at
    assert before + timedelta(hours=1) <= presigned.expires_at <= after + timedelta(hours=1)
    assert presigned.expires_at.tzinfo is not None and presigned.expires_at.utcoffset() == timedelta(0)
    # The same signature on another key (of another customer, or beside it) is refused.
    key = presigned.blob_uri.removeprefix(f"s3://{BUCKET}/")
    for other in (key.replace("/acme/", "/globex/"), key.replace("/uploads/", "/uploads/x")):
        url = presigned.url.replace(quote(key), quote(other))
        answer = requests.put(url, data=users_csv(1), timeout=30)
        assert answer.status_code == 403 and "SignatureDoesNotMatch" in answer.text, answer.text
        assert not s3_stack.s3.list_objects_v2(Bucket=BUCKET, Prefix=other).get("Contents")
    # A URL past its expiry is refused.
    short = blob.presign("acme", "late.csv", "s3", s3_stack.config, expires_in=1)
    assert short.expires_at <= datetime.now(UTC) + timedelta(seconds=1)
    until(lambda: datetime.now(UTC) > short.expires_at, timeout=5)
    answer = requests.put(short.url, data=users_csv(1), timeout=30)
    assert answer.status_code == 403 and "expired" in answer.text, answer.text


@pytest.mark.parametrize(
    ("customer", "store", "expires_in", "field"),
    [
        ("plain", "s3", 3600, "store"),  # no S3 area
        ("acme", "azure", 3600, "store"),  # no Azure area
        ("acme", "gcs", 3600, "store"),
        ("acme", "ftp", 3600, "store"),
        ("nobody", "s3", 3600, "customer_id"),
        ("acme", "s3", 0, "expires_in"),
    ],
)
def test_presign_refuses_naming_the_field(
    s3_stack: S3Stack, customer: str, store: str, expires_in: int, field: str
) -> None:
    with pytest.raises(RequestRefused) as refused:
        blob.presign(customer, "u.csv", store, s3_stack.config, expires_in=expires_in)
    assert refused.value.field == field, str(refused.value)


def test_presign_without_s3_credentials_is_refused_naming_the_object_only(
    s3_stack: S3Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3_stack.tmp / "no-such-file"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(s3_stack.tmp / "no-such-file"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(s3_source, "_presigners", {})  # as a fresh process: no signer cached with the keys
    with pytest.raises(BlobRefused) as refused:
        blob.presign("acme", "u.csv", "s3", s3_stack.config)
    says = f"no S3 credentials are configured to sign an upload URL for s3://{BUCKET}/{PREFIX}/acme/uploads/"
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("filename", "safe"),
    [
        ("users.csv", "users.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\export 1.csv", "export 1.csv"),
        ("bad\x00na\rme\n.csv", "badname.csv"),
        ("\u202evsc.exe", "vsc.exe"),  # a bidi override would show it as exe.csv
        ("what?#.csv", "what__.csv"),
        ("trailing.csv. ", "trailing.csv"),
        ("é" * 300, "é" * 200),
        ("", "upload"),
        ("..", "upload"),
        ("dir/", "upload"),
    ],
)
def test_presign_names_the_upload_after_the_basename_of_the_clients_file_made_safe(filename: str, safe: str) -> None:
    assert blob.upload_name(filename) == safe


@pytest.fixture(scope="module")
def rest(s3_stack: S3Stack) -> Iterator[str]:
    """A real gunicorn over the S3 stack, with tokens for acme and globex."""
    tokens = s3_stack.tmp / "tokens.json"
    tokens.write_text(json.dumps({"tok-acme": ["acme"], "tok-globex": ["globex"]}))
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = dict(s3_stack.env, API_TOKENS_PATH=str(tokens))
    process = subprocess.Popen(
        [gunicorn, "-b", f"127.0.0.1:{port}", "service.rest:app"], env=env, cwd=ROOT, start_new_session=True
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_post_uploads_presign_answers_a_url_whose_file_imports_over_rest(s3_stack: S3Stack, rest: str) -> None:
    globex = {"Authorization": "Bearer tok-globex"}
    answer = requests.post(f"{rest}/uploads/presign", json={"filename": "signed.csv"}, headers=globex, timeout=30)
    assert answer.status_code == 200, answer.text
    signed = answer.json()
    assert signed["method"] == "PUT" and signed["blob_uri"].startswith(f"s3://{BUCKET}/{PREFIX}/globex/uploads/")
    assert datetime.fromisoformat(signed["expires_at"]) <= datetime.now(UTC) + timedelta(hours=1, seconds=5)
    body = users_csv(4)
    put = requests.put(signed["url"], data=body, headers=signed["headers"], timeout=30)
    assert put.status_code == 200, put.text
    request = {"customer_id": "globex", "product_type": "users", "blob_uri": signed["blob_uri"]}
    enqueued = requests.post(f"{rest}/enqueue", json=request, headers=globex, timeout=30)
    assert enqueued.status_code == 202, enqueued.text
    job = s3_stack.wait(enqueued.json()["job_id"], timeout=60)
    assert (job.status, job.rows_inserted) == ("succeeded", 4), job.error
    # acme's uploads go to the blob root (tus), another customer is not the token's, a bad body names its field.
    acme = {"Authorization": "Bearer tok-acme"}
    own = requests.post(f"{rest}/uploads/presign", json={"filename": "a.csv"}, headers=acme, timeout=30)
    assert own.status_code == 400 and own.json()["error"]["field"] == "customer_id"
    assert "/uploads" in own.json()["error"]["message"]
    other = requests.post(
        f"{rest}/uploads/presign", json={"filename": "a.csv", "customer_id": "globex"}, headers=acme, timeout=30
    )
    assert other.status_code == 403
    for bad, named in (({}, "filename"), ({"filename": "a", "expires_in": 0}, "expires_in"), ({"x": 1}, "x")):
        refused = requests.post(f"{rest}/uploads/presign", json=bad, headers=globex, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == named, (bad, refused.text)


def test_an_upload_goes_straight_to_s3_in_parts(s3_stack: S3Stack) -> None:
    """SPEC 19: an upload goes straight to the customer's own area, in parts, when its "uploads" names it."""
    assert_uploads_land_in_the_store(s3_stack, "s3", users_csv(UPLOAD_ROWS), UPLOAD_ROWS)
    left = s3_stack.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert not [found for found in left if "/globex/uploads/" in found["Key"]], left


def test_a_tus_upload_of_a_customer_whose_uploads_go_to_s3_lands_there_imports_and_is_deleted(
    s3_stack: S3Stack, rest: str, tmp_path: Path
) -> None:
    from tusclient import client as tus

    data = users_csv(7)
    source = tmp_path / "tus to s3.csv"
    source.write_bytes(data)
    globex = {"Authorization": "Bearer tok-globex"}
    sender = tus.TusClient(f"{rest}/uploads", headers=globex).uploader(
        str(source), chunk_size=100, metadata={"filename": source.name}
    )
    sender.upload()
    upload_id = sender.url.rsplit("/", 1)[1]
    request = {"customer_id": "globex", "product_type": "users", "upload_id": upload_id}
    enqueued = requests.post(f"{rest}/enqueue", json=request, headers=globex, timeout=30)
    assert enqueued.status_code == 202, enqueued.text
    job = s3_stack.wait(enqueued.json()["job_id"], timeout=60)
    assert (job.status, job.rows_inserted) == ("succeeded", 7), job.error
    key = job.blob_uri.removeprefix(f"s3://{BUCKET}/")
    assert key.startswith(f"{PREFIX}/globex/uploads/{upload_id}-") and key.endswith("tus to s3.csv")
    assert s3_stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    deleted = requests.delete(sender.url, headers={**globex, "Tus-Resumable": "1.0.0"}, timeout=30)
    assert deleted.status_code == 204
    with pytest.raises(Exception, match="404|NoSuchKey|Not Found"):
        s3_stack.s3.head_object(Bucket=BUCKET, Key=key)


def test_a_feed_imports_each_object_version_once_and_moves_it_after(
    s3_stack: S3Stack,
) -> None:
    """SPEC 20: a feed on a prefix of the customer's s3:// area."""
    assert_feeds_import_each_version_once(s3_stack, f"s3://{BUCKET}/{PREFIX}/acme/")
