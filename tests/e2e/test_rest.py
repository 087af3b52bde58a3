"""The REST edge end to end: real gunicorn, a real `dramatiq actors` worker, real Postgres, over HTTP.

Every answer the tests receive is checked against the OpenAPI document the server serves:
its status must be documented for that operation, its body must validate against the
documented schema and its documented headers must be present.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2.extras
import pytest
from jsonschema import Draft202012Validator

from service.edges.rest import openapi
from service.edges.rest.ui import TUS_SCRIPT
from service.sources import blob
from service.storage.app_db import Q
from service.storage.jobs import JobStore
from tests.conftest import ROOT, query, until
from tests.e2e.conftest import TOKENS, USERS_CSV, Stack, free_port, stop, wait_for_port

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
BAD_TOKEN = "tok-not-configured-7f3a"
ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}
ADMIN = {"Authorization": "Bearer tok-admin"}
BAD = {"Authorization": f"Bearer {BAD_TOKEN}"}
FINAL = ("succeeded", "failed", "cancelled", "undone")
TEXT_TYPES = ("text/html", "text/plain", "text/javascript")  # the status page, its tus client, the metrics: bytes
CSV_TYPE = "text/csv; charset=utf-8"
# Statuses the unit tests produce (tests/unit/test_openapi.py): not reachable with a healthy stack.
NOT_PROVOKED_HERE = {500, 503}
# Answers the core gives on its own terms, also produced there: a cancel is complete when it
# answers (the worker's part only deletes rows), so its 202 is never seen here.
NOT_PROVOKED_HERE_FOR = {
    ("/jobs/{job_id}/cancel", "POST", 202),
    # A presigned URL needs a customer with its own S3 area: tests/e2e/test_s3.py gets one.
    ("/uploads/presign", "POST", 200),
    # A run that finds another holding its feed: tests/e2e/test_feeds.py provokes it with racing run calls.
    ("/feeds/{feed_id}/run", "POST", 409),
}


@dataclass
class Answer:
    """One HTTP answer: status, headers and the body parsed as JSON."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Client:
    """Talks HTTP to the server and checks every answer against the served OpenAPI document."""

    base_url: str
    document: dict[str, Any]
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        """Send one request (JSON body, or raw bytes) and return the checked answer."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = dict(headers or {})
        if data is not None and raw is None:
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(urlsplit(self.base_url).netloc, timeout=30)
        try:
            conn.request(method, path, body=data, headers=sent)
            answer = _read(conn.getresponse(), head=method == "HEAD")
        finally:
            conn.close()
        self.check(method, path, answer)
        return answer

    def chunked(self, path: str, parts: Iterator[bytes], headers: dict[str, str]) -> Answer:
        """POST a body with Transfer-Encoding: chunked (no Content-Length)."""
        conn = http.client.HTTPConnection(urlsplit(self.base_url).netloc, timeout=30)
        try:
            conn.request("POST", path, body=parts, headers={"Content-Type": "application/json", **headers})
            answer = _read(conn.getresponse())
        finally:
            conn.close()
        self.check("POST", path, answer)
        return answer

    def check(self, method: str, path: str, answer: Answer) -> None:
        """The answer's status, body and headers are what the document promises."""
        template = _template(self.document, urlsplit(path).path)
        operation = self.document["paths"].get(template or "", {}).get(method.lower())
        if operation is None:  # not an operation: only an unknown route, a wrong method or no token
            assert answer.status in (401, 404, 405), (method, path, answer)
            _validate(self.document, {"$ref": "#/components/schemas/Error"}, answer.body)
            return
        documented = operation["responses"].get(str(answer.status))
        assert documented is not None, f"{method} {template} answered undocumented {answer.status}: {answer.body}"
        if "content" not in documented:  # documented without a body: none came
            assert answer.body is None, f"{method} {template} {answer.status} has a body"
        elif method != "HEAD":  # a HEAD answer has the headers of the body it leaves out
            self._check_body(method, template, answer, documented)
        for name, header in documented.get("headers", {}).items():
            if header.get("required", True) or name.lower() in answer.headers:
                assert name.lower() in answer.headers, f"{method} {template} {answer.status} lacks {name}"
                _validate(self.document, header["schema"], answer.headers[name.lower()])
        self.seen.add((template or "", method.upper(), answer.status))

    def _check_body(self, method: str, template: str | None, answer: Answer, documented: dict[str, Any]) -> None:
        given = answer.headers.get("content-type", "")
        media = (
            "text/csv"
            if given == CSV_TYPE
            else next((t for t in TEXT_TYPES if given.startswith(t)), "application/json")
        )
        assert media in documented["content"], f"{method} {template} {answer.status} answered {media}"
        if media == "application/json":
            _validate(self.document, documented["content"][media]["schema"], answer.body)

    def wait(self, job_id: str, headers: dict[str, str], timeout: float = 60) -> dict[str, Any]:
        """Poll the job over HTTP until it reaches a final status (the worker is another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.call("GET", f"/jobs/{job_id}", headers=headers).body
            if job["status"] in FINAL:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def _read(response: http.client.HTTPResponse, head: bool = False) -> Answer:
    """The answer, its body parsed as JSON (a CSV download stays bytes)."""
    raw = response.read()
    headers = {name.lower(): value for name, value in response.getheaders()}
    if head or (not raw and "content-type" not in headers):  # a HEAD, a 204 (tus answers): no body
        return Answer(response.status, headers, None)
    if headers.get("content-type") == CSV_TYPE or headers.get("content-type", "").startswith(TEXT_TYPES):
        return Answer(response.status, headers, raw)
    assert headers.get("content-type", "").startswith("application/json"), headers
    return Answer(response.status, headers, json.loads(raw))


def _template(document: dict[str, Any], path: str) -> str | None:
    """The documented path template a concrete path matches, if any (a literal path first, as
    falcon routes /uploads/presign before /uploads/{upload_id})."""
    if path in document["paths"]:
        return path
    for template in document["paths"]:
        pattern = re.sub(r"\{[^/]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
        if re.fullmatch(pattern, path):
            return str(template)
    return None


def _validate(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate against a schema of the document, its $refs resolved within the document."""
    rooted = {**schema, "components": document["components"]}
    Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(instance)


@dataclass
class Server:
    """Our own gunicorn, its output captured to a file so tests can read it."""

    process: subprocess.Popen[bytes]
    base_url: str
    output: Path


def start_gunicorn(stack: Stack, output: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """gunicorn service.rest:app on a free port, stdout and stderr into `output`."""
    port = free_port()
    with output.open("ab") as sink:
        command = [GUNICORN, "-b", f"127.0.0.1:{port}", "-w", "2", *args, "service.rest:app"]
        process = subprocess.Popen(
            command, env=env or stack.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.processes.append(process)
    wait_for_port(port, process)
    return Server(process, f"http://127.0.0.1:{port}", output)


@pytest.fixture(scope="module")
def server(stack: Stack) -> Server:
    """One gunicorn for the module, logging as much as it can (to catch leaked secrets)."""
    env = dict(stack.env, LOG_LEVEL="DEBUG")
    return start_gunicorn(stack, stack.tmp / "gunicorn.log", "--log-level", "debug", "--access-logfile", "-", env=env)


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    """A client checking answers against the document the server serves."""
    conn = http.client.HTTPConnection(urlsplit(server.base_url).netloc, timeout=30)
    conn.request("GET", "/openapi.json")
    response = conn.getresponse()
    assert response.status == 200
    document = json.loads(response.read())
    conn.close()
    return Client(server.base_url, document)


def body(stack: Stack, customer: str = "acme", **changes: Any) -> dict[str, Any]:
    """A valid enqueue body for a fresh file in the customer's blob area, with changes."""
    path = stack.blob(customer, f"{uuid.uuid4().hex[:8]}.csv")
    request: dict[str, Any] = {"customer_id": customer, "product_type": "users", "blob_uri": path.as_uri()}
    request.update(changes)
    return {k: v for k, v in request.items() if v is not None}


def assert_error(answer: Answer, status: int, field: str | None = None, says: str = "") -> None:
    """The answer is an error of this status, naming this field, with this text in its message."""
    assert answer.status == status, answer
    assert answer.body["error"]["status"] == status
    assert answer.body["error"]["field"] == field, answer.body
    assert says in answer.body["error"]["message"], answer.body


# -- probes and the document --------------------------------------------------------------


def test_healthz_answers_ok_without_a_token(client: Client) -> None:
    answer = client.call("GET", "/healthz")
    assert (answer.status, answer.body) == (200, {"status": "ok"})


def test_the_status_page_is_html_under_a_strict_content_security_policy(client: Client) -> None:
    answer = client.call("GET", "/ui")
    assert answer.status == 200 and answer.body.startswith(b"<!doctype html>")
    assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_metrics_are_prometheus_text_and_need_the_metrics_token_only_when_one_is_set(
    client: Client, stack: Stack
) -> None:
    answer = client.call("GET", "/metrics")  # this server has no metrics_token
    assert answer.status == 200 and b"import_app_db_up 1.0" in answer.body
    assert b'import_http_requests_total{method="GET",route="/ui",status="200"}' in answer.body
    guarded = start_gunicorn(stack, stack.tmp / "guarded.log", env=dict(stack.env, METRICS_TOKEN="m-secret"))
    other = Client(guarded.base_url, client.document, client.seen)
    for headers in ({}, {"Authorization": "Bearer tok-admin"}):
        refused = other.call("GET", "/metrics", headers=headers)
        assert_error(refused, 401, None, "metrics_token")
    assert other.call("GET", "/metrics", headers={"Authorization": "Bearer m-secret"}).status == 200
    stop(guarded.process)


def test_readyz_answers_200_while_the_app_database_answers(client: Client) -> None:
    answer = client.call("GET", "/readyz")
    assert (answer.status, answer.body) == (200, {"status": "ready"})


def test_the_served_openapi_document_is_the_one_in_the_code_and_needs_no_token(client: Client) -> None:
    answer = client.call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.body == openapi.document()


# -- enqueue and the life of a job --------------------------------------------------------


def test_a_job_enqueued_over_rest_runs_to_succeeded_and_its_logs_come_oldest_first(
    stack: Stack, client: Client
) -> None:
    answer = client.call("POST", "/enqueue", body(stack, options={"format": "csv"}), headers=ACME)
    assert answer.status == 202
    assert answer.body["status"] == "queued"
    assert answer.headers["location"] == f"/jobs/{answer.body['job_id']}"
    assert client.call("GET", answer.headers["location"], headers=ACME).body["job_id"] == answer.body["job_id"]
    job = client.wait(answer.body["job_id"], ACME)
    assert job["status"] == "succeeded", job
    assert (job["rows_total"], job["rows_valid"], job["rows_invalid"], job["rows_inserted"]) == (3, 2, 1, 2)
    logs = client.call("GET", f"/jobs/{job['job_id']}/logs", headers=ACME).body["logs"]
    assert [line["at"] for line in logs] == sorted(line["at"] for line in logs)
    bad_rows = [line for line in logs if line["row_number"] is not None]
    assert [(line["row_number"], line["field"]) for line in bad_rows] == [(2, "email")]


def test_a_chunked_body_without_content_length_is_read_and_enqueued(stack: Stack, client: Client) -> None:
    encoded = json.dumps(body(stack)).encode()
    answer = client.chunked("/enqueue", iter([encoded[:10], encoded[10:]]), ACME)
    assert answer.status == 202, answer


def test_a_plain_file_job_run_by_the_workers_shows_its_source_in_get_and_list(stack: Stack, client: Client) -> None:
    answer = client.call("POST", "/enqueue", body(stack), headers=ACME)  # no format option: found from the name
    job = client.wait(answer.body["job_id"], ACME)
    assert job["status"] == "succeeded", job
    plain = {"scheme": "file", "compression": None, "format": "csv", "member": None}
    assert job["source"] == plain
    listed = client.call("GET", "/jobs?customer_id=acme&limit=200", headers=ACME).body["jobs"]
    assert [found["source"] for found in listed if found["job_id"] == job["job_id"]] == [plain]


@pytest.mark.parametrize("uri", ["https://files.example.com/acme/users.csv", "HTTP://files.example.com/acme/u.csv"])
def test_an_https_blob_uri_of_a_customer_without_url_prefixes_answers_400_naming_them(
    stack: Stack, client: Client, uri: str
) -> None:
    request = body(stack, blob_uri=uri)
    # The documented request admits the URI: the refusal is the server's, not the schema's pattern.
    _validate(client.document, {"$ref": "#/components/schemas/EnqueueRequest"}, request)
    assert_error(client.call("POST", "/enqueue", request, headers=ACME), 400, "blob_uri", "url_prefixes")


def test_the_same_idempotency_key_and_body_answer_200_with_the_first_job(stack: Stack, client: Client) -> None:
    request, key = body(stack), {"Idempotency-Key": f"key-{uuid.uuid4()}", **ACME}
    first = client.call("POST", "/enqueue", request, headers=key)
    again = client.call("POST", "/enqueue", request, headers=key)
    assert (first.status, again.status) == (202, 200)
    assert again.body["job_id"] == first.body["job_id"]
    assert again.body["blob_uri"] == request["blob_uri"]


def test_the_same_idempotency_key_with_another_body_answers_409(stack: Stack, client: Client) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}", **ACME}
    assert client.call("POST", "/enqueue", body(stack), headers=key).status == 202
    assert_error(client.call("POST", "/enqueue", body(stack), headers=key), 409, says="idempotency key")


# -- 400: refused requests, each naming its field -----------------------------------------


@pytest.mark.parametrize(
    "raw, says",
    [
        (b'{"customer_id": "acme",', "malformed JSON"),
        (b"\xc3\x28 not utf-8", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
        (b"", "empty"),
    ],
    ids=["truncated", "not-utf8", "nested-too-deep", "empty"],
)
def test_a_body_that_is_not_json_answers_400_without_a_field(client: Client, raw: bytes, says: str) -> None:
    answer = client.call("POST", "/enqueue", raw=raw, headers={"Content-Type": "application/json", **ACME})
    assert_error(answer, 400, None, says)


@pytest.mark.parametrize(
    "changes, field, says",
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"product_type": None}, "product_type", "required"),
        ({"customer_id": 42}, "customer_id", "must be a non-empty string"),
        ({"options": "fast"}, "options", "options must be an object"),
        ({"options": {"speed": "fast"}}, "options.speed", "unknown option"),
        ({"options": {"dry_run": "yes"}}, "options.dry_run", "must be a bool"),
        ({"options": {"delimiter": ";;"}}, "options.delimiter", "one character"),
        ({"options": {"mode": "merge"}}, "options.mode", "must be one of append, upsert, replace"),
        ({"options": {"mode": "upsert", "atomic": False}}, "options.atomic", "cannot be false"),
        ({"options": {"allow_empty": True}}, "options.allow_empty", "replace"),
        ({"options": {"mode": "append", "allow_empty": False}}, "options.allow_empty", "replace"),
        ({"options": {"mode": "replace", "atomic": "true"}}, "options.atomic", "must be a bool"),
        ({"product_type": "spaceships"}, "product_type", "unknown product type"),
        ({"blob_uri": "s3://bucket/users.csv"}, "blob_uri", "scheme 's3' is not supported"),
        ({"blob_uri": "file:///etc/passwd"}, "blob_uri", "outside the blob area"),
    ],
)
def test_a_refused_enqueue_answers_400_naming_the_field(
    stack: Stack, client: Client, changes: dict[str, Any], field: str, says: str
) -> None:
    assert_error(client.call("POST", "/enqueue", body(stack, **changes), headers=ACME), 400, field, says)


@pytest.mark.parametrize("key", ["   ", "k" * 201])
def test_a_blank_or_overlong_idempotency_key_answers_400_naming_it(stack: Stack, client: Client, key: str) -> None:
    answer = client.call("POST", "/enqueue", body(stack), headers={"Idempotency-Key": key, **ACME})
    assert_error(answer, 400, "idempotency_key", "Idempotency-Key")


def test_a_body_that_is_not_an_object_answers_400(client: Client) -> None:
    assert_error(client.call("POST", "/enqueue", ["acme"], headers=ACME), 400, None, "JSON object")


def test_an_unknown_customer_answers_400_to_a_token_for_every_customer(stack: Stack, client: Client) -> None:
    request = dict(body(stack), customer_id="initech")
    assert_error(client.call("POST", "/enqueue", request, headers=ADMIN), 400, "customer_id", "unknown customer")


def test_blob_uris_that_leave_the_customer_area_answer_400(stack: Stack, client: Client) -> None:
    area = stack.blob_root / "acme"
    (area / "escape.csv").unlink(missing_ok=True)
    (area / "escape.csv").symlink_to("/etc/passwd")
    globex_file = stack.blob("globex", "theirs.csv")
    for uri in (
        f"file://{area}/../globex/theirs.csv",
        (area / "escape.csv").as_uri(),
        globex_file.as_uri(),
    ):
        answer = client.call("POST", "/enqueue", body(stack, blob_uri=uri), headers=ACME)
        assert_error(answer, 400, "blob_uri", "outside the blob area")


def test_a_bad_status_or_limit_in_a_listing_answers_400_naming_it(client: Client) -> None:
    assert_error(client.call("GET", "/jobs?status=sleeping", headers=ACME), 400, "status")
    for limit in ("0", "ten", "1001"):
        assert_error(client.call("GET", f"/jobs?limit={limit}", headers=ACME), 400, "limit")


# -- 401 and 403: tokens and tenants --------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {BAD_TOKEN}", "Basic dG9rLWFjbWU6", "Bearer "],
    ids=["none", "unknown", "not-bearer", "empty"],
)
def test_a_missing_or_unknown_token_answers_401_with_www_authenticate(
    stack: Stack, client: Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    job_id = str(uuid.uuid4())
    for method, path, payload in (
        ("POST", "/enqueue", body(stack)),
        ("GET", "/jobs", None),
        ("GET", f"/jobs/{job_id}", None),
        ("GET", f"/jobs/{job_id}/logs", None),
        ("GET", f"/jobs/{job_id}/rejects", None),
        ("GET", f"/jobs/{job_id}/rejects.csv", None),
        ("POST", f"/jobs/{job_id}/cancel", None),
        ("POST", f"/jobs/{job_id}/undo", None),
        ("POST", f"/jobs/{job_id}/replay", None),
        ("GET", "/feeds", None),
        ("POST", "/feeds", feed_body(stack)),
        ("GET", f"/feeds/{job_id}", None),
        ("PATCH", f"/feeds/{job_id}", {"paused": True}),
        ("DELETE", f"/feeds/{job_id}", None),
        ("POST", f"/feeds/{job_id}/run", None),
        ("GET", f"/feeds/{job_id}/files", None),
        ("POST", f"/feeds/{job_id}/files/{'0' * 32}/retry", None),
    ):
        answer = client.call(method, path, payload, headers=headers)
        assert_error(answer, 401)
        assert answer.headers["www-authenticate"] == "Bearer"


def test_enqueue_for_another_customer_answers_403(stack: Stack, client: Client) -> None:
    answer = client.call("POST", "/enqueue", body(stack, "globex"), headers=ACME)
    assert_error(answer, 403, None, "globex")


def test_listing_another_customers_jobs_answers_403(client: Client) -> None:
    assert_error(client.call("GET", "/jobs?customer_id=globex", headers=ACME), 403, None, "globex")


# -- 404, 405, 413, 415 ---------------------------------------------------------------------


def test_another_customers_job_answers_404_exactly_like_an_unknown_one(stack: Stack, client: Client) -> None:
    theirs = client.call("POST", "/enqueue", body(stack, "globex"), headers=GLOBEX).body["job_id"]
    unknown = str(uuid.uuid4())
    for job_id in (theirs, unknown, "not-a-uuid", "1'; DROP TABLE import_jobs; --"):
        for suffix in ("", "/logs", "/rejects", "/rejects.csv"):
            answer = client.call("GET", f"/jobs/{_quote(job_id)}{suffix}", headers=ACME)
            assert_error(answer, 404)
    assert client.call("GET", f"/jobs/{theirs}", headers=ADMIN).status == 200


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_an_unknown_route_answers_404_in_the_error_shape(client: Client) -> None:
    assert_error(client.call("GET", "/nothing/here", headers=ACME), 404)
    assert_error(client.call("GET", "/jobs/a/b/c", headers=ACME), 404)


def test_a_wrong_method_answers_405_in_the_error_shape_with_allow(client: Client) -> None:
    for method, path in (
        ("GET", "/enqueue"),
        ("DELETE", f"/jobs/{uuid.uuid4()}"),
        ("POST", "/healthz"),
        ("GET", f"/jobs/{uuid.uuid4()}/cancel"),
        ("PUT", f"/jobs/{uuid.uuid4()}/undo"),
        ("GET", f"/jobs/{uuid.uuid4()}/replay"),
        ("PUT", "/feeds"),
        ("POST", f"/feeds/{uuid.uuid4()}"),
        ("GET", f"/feeds/{uuid.uuid4()}/run"),
        ("GET", f"/feeds/{uuid.uuid4()}/files/{'0' * 32}/retry"),
        ("POST", f"/feeds/{uuid.uuid4()}/files"),
    ):
        answer = client.call(method, path, headers=ACME)
        assert_error(answer, 405, None, "not allowed")
        assert "allow" in answer.headers


@pytest.mark.parametrize("mebibytes", [2, 6])
def test_a_body_over_one_mebibyte_answers_413(stack: Stack, client: Client, mebibytes: int) -> None:
    # 6 MiB outgrows the loopback socket buffers: the client sees the 413 only because the server drains.
    padding = "x" * (mebibytes * 1024 * 1024)
    request = json.dumps(body(stack, colour=padding)).encode()
    assert_error(client.call("POST", "/enqueue", raw=request, headers=ACME), 413, None, "over 1048576 bytes")


def test_a_chunked_body_over_one_mebibyte_answers_413(client: Client) -> None:
    parts = iter([b'{"colour": "'] + [b"x" * 65536] * 32 + [b'"}'])
    assert_error(client.chunked("/enqueue", parts, ACME), 413, None, "over 1048576 bytes")


def test_a_content_type_that_is_not_json_answers_415(stack: Stack, client: Client) -> None:
    raw = json.dumps(body(stack)).encode()
    answer = client.call("POST", "/enqueue", raw=raw, headers={"Content-Type": "text/csv", **ACME})
    assert_error(answer, 415)


# -- rejected rows (SPEC 14; tests/e2e/test_rejects_edges.py compares the three edges) --------


def test_a_jobs_rejected_rows_download_as_csv_and_read_as_pages(stack: Stack, client: Client) -> None:
    job = client.wait(client.call("POST", "/enqueue", body(stack), headers=ACME).body["job_id"], ACME)
    assert job["rows_invalid"] == 1, job
    download = client.call("GET", f"/jobs/{job['job_id']}/rejects.csv", headers=ACME)
    assert download.status == 200
    assert (
        download.body
        == b"external_id,email,age,errors\r\nu2,broken,31,email: 'broken' is not a valid email address\r\n"
    )
    assert download.headers["content-disposition"] == f'attachment; filename="{job["job_id"]}-rejects.csv"'
    page = client.call("GET", f"/jobs/{job['job_id']}/rejects?after=0&limit=1", headers=ACME)
    assert page.status == 200
    assert page.body == {
        "rejects": [
            {
                "source_row": 2,
                "record": {"external_id": "u2", "email": "broken", "age": "31"},
                "errors": [{"field": "email", "message": "email: 'broken' is not a valid email address"}],
            }
        ],
        "next": None,
    }


@pytest.mark.parametrize("query, field", [("limit=1001", "limit"), ("limit=abc", "limit"), ("after=-1", "after")])
def test_a_bad_after_or_limit_of_a_rejects_page_answers_400_naming_it(
    stack: Stack, client: Client, query: str, field: str
) -> None:
    job_id = client.call("POST", "/enqueue", body(stack), headers=ACME).body["job_id"]
    assert_error(client.call("GET", f"/jobs/{job_id}/rejects?{query}", headers=ACME), 400, field, field)


# -- write modes, cancel and undo (SPEC 12-13) -----------------------------------------------


def organizations(stack: Stack, count: int = 0) -> tuple[dict[str, Any], str]:
    """An enqueue body for a fresh acme organizations file and the prefix of its keys.

    Without a count: rows 1 and 3 valid, row 2 invalid (no name), row 4 repeats row 1's key.
    Organizations are used by no other test here, so nothing queued before holds these jobs up.
    """
    prefix = f"org-{uuid.uuid4().hex[:8]}-"
    if count:
        rows = [f"{prefix}{n},Organisation {n},FR" for n in range(count)]
    else:
        rows = [f"{prefix}1,One,FR", f"{prefix}2,,FR", f"{prefix}3,Three,DE", f"{prefix}1,Uno,IT"]
    path = stack.blob("acme", f"{prefix}orgs.csv", "external_id,name,country\n" + "\n".join(rows) + "\n")
    return {"customer_id": "acme", "product_type": "organizations", "blob_uri": path.as_uri()}, prefix


def held_rows(stack: Stack, prefix: str) -> int:
    """How many acme organizations rows have a key starting with prefix."""
    statement = "SELECT count(*) FROM organizations WHERE data->>'external_id' LIKE %s"
    return int(query(stack.customer_dsns["acme"], statement, (f"{prefix}%",))[0][0])


def job_nobody_runs(stack: Stack, product: str = "courses") -> str:
    """A queued acme job without a queue message: only a cancel can end it."""
    path = stack.blob("acme", f"idle-{uuid.uuid4().hex[:8]}.csv")
    job_id = str(uuid.uuid4())
    store = JobStore(stack.app_dsn, maxconn=1)
    try:
        with store.transaction() as cur:
            row = {"id": job_id, "customer_id": "acme", "product_type": product, "blob_uri": blob.uri_for(path)}
            row.update(options=psycopg2.extras.Json({}), idempotency_key=None, request_hash=None)
            cur.execute(Q["insert_job"], row)
    finally:
        store.close()
    return job_id


def test_an_upsert_job_runs_and_its_view_carries_every_write_mode_count(stack: Stack, client: Client) -> None:
    request, _ = organizations(stack)
    answer = client.call("POST", "/enqueue", dict(request, options={"mode": "upsert"}), headers=ACME)
    assert answer.status == 202, answer
    job = client.wait(answer.body["job_id"], ACME)
    assert (job["status"], job["options"]) == ("succeeded", {"mode": "upsert"}), job
    counts = ("rows_total", "rows_valid", "rows_invalid", "rows_inserted", "rows_updated")
    assert [job[name] for name in counts] == [4, 3, 1, 2, 0]
    assert [job[name] for name in ("rows_unchanged", "rows_duplicate", "rows_deleted")] == [0, 1, 0]
    assert job["undone_at"] is None


def test_undoing_a_succeeded_upsert_answers_200_undone_and_again_200_unchanged(stack: Stack, client: Client) -> None:
    request, prefix = organizations(stack)
    enqueued = client.call("POST", "/enqueue", dict(request, options={"mode": "upsert"}), headers=ACME)
    job = client.wait(enqueued.body["job_id"], ACME)
    assert job["status"] == "succeeded" and held_rows(stack, prefix) == 2, job
    undone = client.call("POST", f"/jobs/{job['job_id']}/undo", headers=ACME)
    assert undone.status == 200, undone
    assert undone.body["status"] == "undone" and undone.body["undone_at"] is not None
    assert datetime.fromisoformat(undone.body["finished_at"]) <= datetime.fromisoformat(undone.body["undone_at"])
    assert held_rows(stack, prefix) == 0
    again = client.call("POST", f"/jobs/{job['job_id']}/undo", headers=ACME)
    assert (again.status, again.body) == (200, undone.body)
    assert client.call("GET", f"/jobs/{job['job_id']}", headers=ACME).body == undone.body


def test_a_big_undo_answers_202_with_location_and_a_worker_makes_the_job_undone(stack: Stack, client: Client) -> None:
    from service.stages.control import UNDO_INLINE_ROWS

    request, prefix = organizations(stack, count=UNDO_INLINE_ROWS + 1)
    enqueued = client.call("POST", "/enqueue", dict(request, options={"mode": "upsert"}), headers=ACME)
    job = client.wait(enqueued.body["job_id"], ACME, timeout=120)
    assert job["status"] == "succeeded" and job["rows_inserted"] == UNDO_INLINE_ROWS + 1, job
    answer = client.call("POST", f"/jobs/{job['job_id']}/undo", headers=ACME)
    assert answer.status == 202, answer
    assert answer.headers["location"] == f"/jobs/{job['job_id']}"
    deadline = time.monotonic() + 60
    while (view := client.call("GET", answer.headers["location"], headers=ACME).body)["status"] != "undone":
        assert view["status"] == "succeeded" and time.monotonic() < deadline, view
        time.sleep(0.2)
    assert view["undone_at"] is not None and held_rows(stack, prefix) == 0


def test_undoing_a_failed_job_answers_409_and_changes_nothing(stack: Stack, client: Client) -> None:
    enqueued = client.call("POST", "/enqueue", body(stack, options={"on_invalid": "fail"}), headers=ACME)
    job = client.wait(enqueued.body["job_id"], ACME)
    assert job["status"] == "failed", job
    assert_error(client.call("POST", f"/jobs/{job['job_id']}/undo", headers=ACME), 409, None, "failed")
    assert client.call("GET", f"/jobs/{job['job_id']}", headers=ACME).body == job


def test_cancelling_a_succeeded_job_answers_409_and_the_job_stays_succeeded(stack: Stack, client: Client) -> None:
    enqueued = client.call("POST", "/enqueue", body(stack), headers=ACME)
    job = client.wait(enqueued.body["job_id"], ACME)
    assert job["status"] == "succeeded", job
    assert_error(client.call("POST", f"/jobs/{job['job_id']}/cancel", headers=ACME), 409, None, "succeeded")
    assert client.call("GET", f"/jobs/{job['job_id']}", headers=ACME).body == job


def test_cancelling_a_queued_job_ends_it_cancelled_and_cancelling_it_again_answers_200_twice(
    stack: Stack, client: Client
) -> None:
    job_id = job_nobody_runs(stack)
    first = client.call(
        "POST", f"/jobs/{job_id}/cancel", raw=b"{}", headers={"Content-Type": "application/json", **ACME}
    )
    assert first.status in (200, 202), first
    deadline = time.monotonic() + 10  # SPEC 13: a cancelled job ends within 10 s
    while (view := client.call("GET", f"/jobs/{job_id}", headers=ACME).body)["status"] != "cancelled":
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert view["finished_at"] is not None
    again = [client.call("POST", f"/jobs/{job_id}/cancel", headers=ACME) for _ in range(2)]
    assert [(answer.status, answer.body) for answer in again] == [(200, view), (200, view)]


def test_cancel_undo_and_replay_of_another_customers_job_answer_404_and_change_nothing(
    stack: Stack, client: Client
) -> None:
    theirs = client.call("POST", "/enqueue", body(stack, "globex"), headers=GLOBEX).body["job_id"]
    assert client.wait(theirs, GLOBEX)["status"] == "succeeded"
    for job_id in (theirs, str(uuid.uuid4()), "not-a-uuid"):
        for action in ("cancel", "undo", "replay"):
            assert_error(client.call("POST", f"/jobs/{job_id}/{action}", headers=ACME), 404)
    assert client.call("GET", f"/jobs/{theirs}", headers=GLOBEX).body["status"] == "succeeded"
    everyone = client.call("GET", "/jobs?limit=1000", headers=ADMIN).body["jobs"]
    assert [job["job_id"] for job in everyone if job["options"].get("replay_of") == theirs] == []


# -- replay (SPEC 14; tests/e2e/test_rejects_edges.py replays through all three edges) ---------


def test_replaying_a_jobs_rejects_answers_202_with_location_and_the_new_job_runs(stack: Stack, client: Client) -> None:
    original = client.wait(client.call("POST", "/enqueue", body(stack), headers=ACME).body["job_id"], ACME)
    assert (original["status"], original["rows_invalid"]) == ("succeeded", 1), original
    answer = client.call("POST", f"/jobs/{original['job_id']}/replay", headers=ACME)
    assert answer.status == 202 and answer.body["status"] == "queued", answer
    assert answer.headers["location"] == f"/jobs/{answer.body['job_id']}"
    job = client.wait(answer.body["job_id"], ACME)
    assert (job["status"], job["options"], job["blob_uri"]) == (
        "succeeded",
        {"replay_of": original["job_id"]},
        original["blob_uri"],
    ), job
    assert (job["rows_total"], job["rows_valid"], job["rows_invalid"]) == (1, 0, 1)
    again = client.call("POST", f"/jobs/{original['job_id']}/replay", headers=ACME)  # a retry: the same job
    assert again.status == 200 and again.body["job_id"] == job["job_id"], again


def test_replaying_a_job_without_rejects_or_a_queued_one_answers_409(stack: Stack, client: Client) -> None:
    request = body(stack)
    blob.resolve(request["blob_uri"], "acme", stack.blob_root).write_text("external_id,email\nk1,k1@x.io\n")
    clean = client.wait(client.call("POST", "/enqueue", request, headers=ACME).body["job_id"], ACME)
    assert (clean["status"], clean["rows_invalid"]) == ("succeeded", 0), clean
    answer = client.call("POST", f"/jobs/{clean['job_id']}/replay", headers=ACME)
    assert_error(answer, 409, None, "no rejected rows")
    queued = job_nobody_runs(stack)
    assert_error(client.call("POST", f"/jobs/{queued}/replay", headers=ACME), 409, None, "queued")
    assert client.call("POST", f"/jobs/{queued}/cancel", headers=ACME).status in (200, 202)


# -- listing ----------------------------------------------------------------------------


def test_the_list_is_newest_first_filtered_by_status_and_limit_and_only_the_tokens_customers(
    stack: Stack, client: Client
) -> None:
    ours = [client.call("POST", "/enqueue", body(stack), headers=ACME).body["job_id"] for _ in range(3)]
    client.call("POST", "/enqueue", body(stack, "globex"), headers=GLOBEX)
    for job_id in ours:
        client.wait(job_id, ACME)
    listed = client.call("GET", "/jobs?limit=1000", headers=ACME).body["jobs"]
    assert {job["customer_id"] for job in listed} == {"acme"}
    created = [job["created_at"] for job in listed]
    assert created == sorted(created, reverse=True)
    assert [job["job_id"] for job in listed if job["job_id"] in ours] == ours[::-1]
    two = client.call("GET", "/jobs?status=succeeded&limit=2&customer_id=acme", headers=ACME).body["jobs"]
    assert len(two) == 2 and {job["status"] for job in two} == {"succeeded"}
    everyone = client.call("GET", "/jobs?limit=1000", headers=ADMIN).body["jobs"]
    assert {job["customer_id"] for job in everyone} == {"acme", "globex"}


# -- feeds (SPEC 20; tests/e2e/test_feeds.py runs them against racing callers and worker pools) ----


def feed_body(stack: Stack, *files: tuple[str, str], **changes: Any) -> dict[str, Any]:
    """A feed's definition watching a fresh folder of acme's blob area that holds these files
    (name, content), with changes. Paused: only our run calls run it, never the workers' sweep."""
    folder = stack.blob_root / "acme" / f"feed-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    settled = time.time() - 60  # older than the time a run leaves a file that may still be written
    for name, content in files:
        stack.blob("acme", f"{folder.name}/{name}", content)
        os.utime(folder / name, (settled, settled))
    request = {
        "customer_id": "acme",
        "product_type": "users",
        "prefix_uri": folder.as_uri() + "/",
        "schedule": {"every_seconds": 3600},
        "paused": True,
    }
    request.update(changes)
    return {k: v for k, v in request.items() if v is not None}


def test_a_feed_is_created_listed_run_read_changed_and_deleted(stack: Stack, client: Client) -> None:
    request = feed_body(stack, ("good.csv", USERS_CSV), ("bad.csv", ""), pattern="*.csv")
    _validate(client.document, {"$ref": "#/components/schemas/FeedRequest"}, request)
    created = client.call("POST", "/feeds", request, headers=ACME)
    assert created.status == 201, created
    feed_id = created.body["feed_id"]
    assert created.headers["location"] == f"/feeds/{feed_id}"
    assert (created.body["paused"], created.body["next_run_at"], created.body["last_run"]) == (True, None, None)
    listed = client.call("GET", "/feeds?customer_id=acme&limit=1000", headers=ACME).body["feeds"]
    assert [feed for feed in listed if feed["feed_id"] == feed_id] == [created.body]
    assert feed_id not in {feed["feed_id"] for feed in client.call("GET", "/feeds", headers=GLOBEX).body["feeds"]}
    run = client.call("POST", f"/feeds/{feed_id}/run", headers=ACME)
    assert run.status == 200, run
    assert (run.body["found"], run.body["enqueued"], run.body["error"]) == (2, 2, None)
    assert run.body["feed"]["files"]["seen"] == 2 and run.body["feed"]["last_run"]["enqueued"] == 2
    for file in run.body["feed"]["recent"]:
        client.wait(file["job_id"], ACME)
    view = client.call("GET", created.headers["location"], headers=ACME)
    assert view.status == 200
    assert view.body["files"] == {"seen": 2, "imported": 1, "failed": 1, "pending": 0}, view.body
    assert {file["key"].rsplit("/", 1)[1]: file["status"] for file in view.body["recent"]} == {
        "good.csv": "succeeded",
        "bad.csv": "failed",
    }
    changed = client.call("PATCH", f"/feeds/{feed_id}", {"paused": False, "pattern": "good.*"}, headers=ACME)
    assert changed.status == 200, changed
    assert (changed.body["paused"], changed.body["pattern"]) == (False, "good.*")
    assert changed.body["next_run_at"] is not None and "files" not in changed.body
    assert client.call("DELETE", f"/feeds/{feed_id}", headers=ACME).status == 204
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/run")):
        answer = client.call(method, f"/feeds/{feed_id}{path}", {} if method == "PATCH" else None, headers=ACME)
        assert_error(answer, 404, None, feed_id)
    assert client.call("GET", f"/jobs/{view.body['recent'][0]['job_id']}", headers=ACME).status == 200  # jobs stay


def test_a_failed_file_of_a_feed_is_retried_in_a_new_job_and_any_other_retry_is_refused(
    stack: Stack, client: Client
) -> None:
    request = feed_body(stack, ("good.csv", USERS_CSV), ("empty.csv", ""))
    feed_id = client.call("POST", "/feeds", request, headers=ACME).body["feed_id"]
    files = client.call("POST", f"/feeds/{feed_id}/run", headers=ACME).body["feed"]["recent"]
    named = {file["key"].rsplit("/", 1)[1]: file for file in files}
    for file in files:
        client.wait(file["job_id"], ACME)
    failed, good = named["empty.csv"], named["good.csv"]
    retried = client.call("POST", f"/feeds/{feed_id}/files/{failed['version']}/retry", headers=ACME)
    assert retried.status == 202, retried
    assert retried.body["job_id"] != failed["job_id"]
    assert retried.headers["location"] == f"/jobs/{retried.body['job_id']}"
    assert client.wait(retried.body["job_id"], ACME)["status"] == "failed"  # still empty
    again = client.call("GET", f"/feeds/{feed_id}", headers=ACME).body["recent"]
    assert [(file["job_id"], file["attempts"]) for file in again if file["version"] == failed["version"]] == [
        (retried.body["job_id"], 2)  # its second job
    ]
    answer = client.call("POST", f"/feeds/{feed_id}/files/{good['version']}/retry", headers=ACME)
    assert_error(answer, 409, None, "is succeeded; only a failed file")  # as a replay of a job that has not ended
    Path(urlsplit(failed["key"]).path).unlink()  # gone from the store: refused as an enqueue would be
    answer = client.call("POST", f"/feeds/{feed_id}/files/{failed['version']}/retry", headers=ACME)
    assert_error(answer, 400, "version", "cannot be imported again")
    for version, headers in (("0" * 32, ACME), ("not-a-version", ACME), (failed["version"], GLOBEX)):
        answer = client.call("POST", f"/feeds/{feed_id}/files/{version}/retry", headers=headers)
        assert_error(answer, 404)


def test_a_feeds_files_are_listed_newest_first_a_page_at_a_time_by_state(stack: Stack, client: Client) -> None:
    names = [f"{n:02}.csv" for n in range(7)]
    request = feed_body(stack, *((name, USERS_CSV) for name in names), ("empty.csv", ""), ("bad.csv", "\0"))
    feed_id = client.call("POST", "/feeds", request, headers=ACME).body["feed_id"]
    for file in client.call("POST", f"/feeds/{feed_id}/run", headers=ACME).body["feed"]["recent"]:
        client.wait(file["job_id"], ACME)

    pages, after = [], None
    while True:
        query = f"limit=4&after={after}" if after else "limit=4"
        page = client.call("GET", f"/feeds/{feed_id}/files?{query}", headers=ACME)
        assert page.status == 200, page
        pages.append([file["key"].rsplit("/", 1)[1] for file in page.body["files"]])
        after = page.body["next"]
        if after is None:
            break
    # One run's files, in reverse key order, each once, four to a page; the last page says next: null.
    assert pages == [["empty.csv", "bad.csv", "06.csv", "05.csv"], ["04.csv", "03.csv", "02.csv", "01.csv"], ["00.csv"]]

    failed = client.call("GET", f"/feeds/{feed_id}/files?state=failed", headers=ACME).body
    assert [(file["key"].rsplit("/", 1)[1], file["status"]) for file in failed["files"]] == [
        ("empty.csv", "failed"),
        ("bad.csv", "failed"),
    ]
    assert failed["next"] is None and all(file["job_id"] for file in failed["files"])
    imported = client.call("GET", f"/feeds/{feed_id}/files?state=imported&limit=1000", headers=ACME).body
    assert sorted(file["key"].rsplit("/", 1)[1] for file in imported["files"]) == names
    assert client.call("GET", f"/feeds/{feed_id}/files?state=pending", headers=ACME).body == {"files": [], "next": None}

    for query, named in (
        ("state=done", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        (f"after={'0' * 32}", "after"),
        ("after=" + "a" * 100, "after"),
    ):
        assert_error(client.call("GET", f"/feeds/{feed_id}/files?{query}", headers=ACME), 400, named)
    for feed, headers in ((feed_id, GLOBEX), (str(uuid.uuid4()), ACME), ("not-a-feed", ACME)):
        assert_error(client.call("GET", f"/feeds/{feed}/files", headers=headers), 404)
    assert client.call("GET", f"/feeds/{feed_id}/files?state=failed", headers=ADMIN).body == failed


@pytest.mark.parametrize(
    "changes, field, says",
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"schedule": None}, "schedule", "required"),
        ({"schedule": {"every_seconds": 1}}, "schedule.every_seconds", "whole number"),
        ({"schedule": {"cron": "every night"}}, "schedule.cron", "five fields"),
        ({"options": {"mode": "merge"}}, "options.mode", "must be one of"),
        ({"after_success": "archive"}, "after_success", "keep"),
        ({"expect_every_hours": 0}, "expect_every_hours", "above 0"),
        ({"prefix_uri": "file:///etc/"}, "prefix_uri", "outside"),
        ({"product_type": "spaceships"}, "product_type", "unknown product type"),
    ],
)
def test_a_refused_feed_answers_400_naming_the_field(
    stack: Stack, client: Client, changes: dict[str, Any], field: str, says: str
) -> None:
    assert_error(client.call("POST", "/feeds", feed_body(stack, **changes), headers=ACME), 400, field, says)


def test_a_feed_moving_its_files_under_its_own_prefix_or_without_a_customer_is_refused(
    stack: Stack, client: Client
) -> None:
    request = feed_body(stack)
    under = dict(request, after_success={"move_to": request["prefix_uri"] + "done/"})
    assert_error(client.call("POST", "/feeds", under, headers=ACME), 400, "after_success.move_to", "under prefix_uri")
    anyone = {k: v for k, v in request.items() if k != "customer_id"}
    assert_error(client.call("POST", "/feeds", anyone, headers=ADMIN), 400, "customer_id", "several customers")
    assert client.call("POST", "/feeds", anyone, headers=ACME).status == 201  # a token of one customer: that one
    assert_error(client.call("POST", "/feeds", raw=b"{", headers=ACME), 400, None, "malformed JSON")


def test_a_feed_for_another_customer_or_a_bad_listing_is_refused(stack: Stack, client: Client) -> None:
    theirs = feed_body(stack, customer_id="globex", prefix_uri=(stack.blob_root / "globex").as_uri() + "/")
    assert_error(client.call("POST", "/feeds", theirs, headers=ACME), 403, None, "globex")
    assert_error(client.call("GET", "/feeds?customer_id=globex", headers=ACME), 403, None, "globex")
    for asked, named in (("limit=0", "limit"), ("limit=1001", "limit"), ("customer_id=no%20such", "customer_id")):
        assert_error(client.call("GET", f"/feeds?{asked}", headers=ACME), 400, named)


def test_a_feed_change_is_refused_naming_the_field_and_hidden_from_other_customers(
    stack: Stack, client: Client
) -> None:
    request = feed_body(stack)
    feed_id = client.call("POST", "/feeds", request, headers=ACME).body["feed_id"]
    path = f"/feeds/{feed_id}"
    for change, named in (
        ({"prefix_uri": request["prefix_uri"]}, "prefix_uri"),
        ({"schedule": {"every_seconds": 1}}, "schedule.every_seconds"),
        ({"paused": "yes"}, "paused"),
    ):
        assert_error(client.call("PATCH", path, change, headers=ACME), 400, named)
    assert_error(client.call("PATCH", path, ["paused"], headers=ACME), 400, None, "JSON object")
    plain = client.call("PATCH", path, raw=b'{"paused": true}', headers={"Content-Type": "text/plain", **ACME})
    assert_error(plain, 415)
    big = json.dumps({"pattern": "x" * (2 << 20)}).encode()
    assert_error(client.call("PATCH", path, raw=big, headers={"Content-Type": "application/json", **ACME}), 413)
    for feed in (feed_id, str(uuid.uuid4()), "not-a-uuid"):
        for method in ("GET", "PATCH", "DELETE"):
            answer = client.call(method, f"/feeds/{feed}", {} if method == "PATCH" else None, headers=GLOBEX)
            assert_error(answer, 404)
        assert_error(client.call("POST", f"/feeds/{feed}/run", headers=GLOBEX), 404)
    assert client.call("GET", path, headers=ADMIN).status == 200


def test_a_feed_body_that_is_too_big_or_not_json_is_refused(stack: Stack, client: Client) -> None:
    big = json.dumps(feed_body(stack, colour="x" * (2 << 20))).encode()
    assert_error(client.call("POST", "/feeds", raw=big, headers={"Content-Type": "application/json", **ACME}), 413)
    raw = json.dumps(feed_body(stack)).encode()
    assert_error(client.call("POST", "/feeds", raw=raw, headers={"Content-Type": "text/csv", **ACME}), 415)


# -- start-up: bind and bad configuration ----------------------------------------------------


def test_gunicorn_binds_rest_addr_from_the_configuration_when_no_bind_is_given(stack: Stack) -> None:
    port = free_port()
    env = dict(stack.env, REST_ADDR=f"127.0.0.1:{port}")
    process = stack.start(GUNICORN, "-w", "1", "service.rest:app", port=port, env=env)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "malformed JSON at line 1"),
        ('{"staging": {}}', "unknown config section 'default'"),
        ('{"default": {"customer_map_path": "bad_map.json"}}', "is not a valid Postgres DSN"),
        ('{"default": {"schemas_dir": "no-such-dir"}}', "not a directory of product schemas"),
    ],
)
def test_a_bad_config_stops_gunicorn_at_start_with_one_line_naming_the_file(
    stack: Stack, tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "bad_map.json").write_text('{"acme": "this is not a dsn"}')
    config = tmp_path / "config.json"
    config.write_text(content)
    env = {k: v for k, v in stack.env.items() if k not in ("CUSTOMER_MAP_PATH",)}
    env.update(CONFIG_PATH=str(config), CONFIG_ENV="default")
    result = subprocess.run(
        [GUNICORN, "-b", f"127.0.0.1:{free_port()}", "service.rest:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("import-service REST:")]
    assert len(ours) == 1 and message in ours[0] and str(tmp_path) in ours[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_app_database_stops_gunicorn_without_a_traceback_or_the_password(stack: Stack) -> None:
    env = dict(stack.env, APP_DB_DSN=f"postgresql://importer:hunter2-secret@127.0.0.1:{free_port()}/app")
    result = subprocess.run(
        [GUNICORN, "-b", f"127.0.0.1:{free_port()}", "service.rest:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot use the app database" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2-secret" not in result.stderr


# -- uploads (tus 1.0, SPEC 19): every documented answer, checked against the document ----------------


def _tus(token: dict[str, str], **headers: str) -> dict[str, str]:
    return {**token, "Tus-Resumable": "1.0.0", **headers}


def _patch(client: Client, path: str, offset: int, body: bytes, token: dict[str, str] = ACME, **more: str) -> Answer:
    headers = _tus(token, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **more})
    return client.call("PATCH", path, headers=headers, raw=body)


def test_an_upload_walks_through_every_documented_answer(client: Client, stack: Stack) -> None:
    data = b"external_id,email\nu1,a@example.com\n"
    name = base64.b64encode(b"walk.csv").decode()
    for path in ("/uploads", "/uploads/anything"):
        assert client.call("OPTIONS", path).status == 204  # no token: a browser's preflight
    assert client.call("POST", "/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "3"}).status == 401
    assert client.call("POST", "/uploads", headers=_tus(ACME, **{"Tus-Resumable": "0.2.2"})).status == 412
    assert client.call("POST", "/uploads", headers=_tus(ACME)).status == 400  # no Upload-Length
    other = base64.b64encode(b"globex").decode()
    assert (
        client.call(
            "POST", "/uploads", headers=_tus(ACME, **{"Upload-Length": "3", "Upload-Metadata": f"customer_id {other}"})
        ).status
        == 403
    )
    assert client.call("POST", "/uploads", headers=_tus(ACME, **{"Upload-Length": str(10**15)})).status == 413
    wrong_type = _tus(ACME, **{"Upload-Length": "3", "Content-Type": "text/csv"})
    assert client.call("POST", "/uploads", headers=wrong_type, raw=b"abc").status == 415
    bad_sum = _tus(
        ACME,
        **{
            "Upload-Length": "3",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": "sha256 " + base64.b64encode(b"x" * 32).decode(),
        },
    )
    assert client.call("POST", "/uploads", headers=bad_sum, raw=b"abc").status == 460
    created = client.call(
        "POST",
        "/uploads",
        headers=_tus(ACME, **{"Upload-Length": str(len(data)), "Upload-Metadata": f"filename {name}"}),
    )
    assert created.status == 201
    path = created.headers["location"]
    assert created.body["offset"] == 0 and created.body["filename"] == "walk.csv"
    assert client.call("HEAD", path, headers=_tus(BAD)).status == 401
    assert client.call("HEAD", path, headers=_tus(GLOBEX)).status == 404
    assert client.call("HEAD", path, headers={**ACME}).status == 412
    assert _patch(client, path, 0, b"x", BAD).status == 401
    assert _patch(client, path, 0, b"x", GLOBEX).status == 404
    assert _patch(client, path, 0, b"x", **{"Tus-Resumable": "9"}).status == 412
    assert (
        client.call(
            "PATCH", path, headers=_tus(ACME, **{"Upload-Offset": "0", "Content-Type": "text/csv"}), raw=b"x"
        ).status
        == 415
    )
    assert (
        client.call(
            "PATCH", path, headers=_tus(ACME, **{"Content-Type": "application/offset+octet-stream"}), raw=b"x"
        ).status
        == 400
    )
    assert _patch(client, path, 3, b"x").status == 409
    assert _patch(client, path, 0, data + b"more").status == 413
    assert (
        _patch(
            client, path, 0, data[:5], **{"Upload-Checksum": "sha256 " + base64.b64encode(b"y" * 32).decode()}
        ).status
        == 460
    )
    busy = _write_slowly(client, path, data)
    try:
        assert _patch(client, path, 0, data).status == 423
    finally:
        busy.close()

    def released() -> bool:  # the cut-off request ended: it kept its one byte
        offset = int(client.call("HEAD", path, headers=_tus(ACME)).headers["upload-offset"])
        return _patch(client, path, offset, b"").status == 204

    until(released, timeout=30)
    head = client.call("HEAD", path, headers=_tus(ACME))
    offset = int(head.headers["upload-offset"])
    assert _patch(client, path, offset, data[offset:]).status == 204
    head = client.call("HEAD", path, headers=_tus(ACME))
    assert head.status == 200 and head.headers["upload-offset"] == str(len(data))
    job = client.call(
        "POST",
        "/enqueue",
        {"customer_id": "acme", "product_type": "users", "upload_id": path.rsplit("/", 1)[1]},
        headers=ACME,
    )
    assert job.status == 202, job.body
    view = client.wait(job.body["job_id"], ACME)
    assert view["status"] == "succeeded" and view["upload"] == {"id": path.rsplit("/", 1)[1], "filename": "walk.csv"}
    assert client.call("DELETE", path, headers=_tus(BAD)).status == 401
    assert client.call("DELETE", path, headers=_tus(GLOBEX)).status == 404
    assert client.call("DELETE", path, headers=ACME).status == 412
    assert client.call("DELETE", path, headers=_tus(ACME)).status == 204
    assert client.call("HEAD", path, headers=_tus(ACME)).status == 404


def _write_slowly(client: Client, path: str, data: bytes) -> socket.socket:
    """A PATCH that has sent the first byte of data and holds the upload (close the socket to end it)."""
    host, port = urlsplit(client.base_url).netloc.split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer tok-acme\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data[:1])
    time.sleep(0.5)  # the server took the upload's lock
    return sock


def test_the_status_page_s_tus_client_is_javascript_served_without_a_token(client: Client) -> None:
    answer = client.call("GET", "/ui/tus.min.js")
    assert answer.status == 200 and answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.body == TUS_SCRIPT.read_bytes()


def test_presign_refuses_what_it_cannot_sign_naming_the_field(client: Client) -> None:
    assert client.call("POST", "/uploads/presign", {"filename": "a.csv"}).status == 401
    own = client.call("POST", "/uploads/presign", {"filename": "a.csv"}, headers=ACME)
    assert own.status == 400 and own.body["error"]["field"] == "customer_id"  # acme's uploads go to tus
    other = client.call("POST", "/uploads/presign", {"filename": "a.csv", "customer_id": "globex"}, headers=ACME)
    assert other.status == 403
    assert (
        client.call("POST", "/uploads/presign", {"customer_id": "acme"}, headers=ADMIN).body["error"]["field"]
        == "filename"
    )
    plain = client.call("POST", "/uploads/presign", headers={**ACME, "Content-Type": "text/plain"}, raw=b"x")
    assert plain.status == 415
    big = client.call(
        "POST", "/uploads/presign", headers={**ACME, "Content-Type": "application/json"}, raw=b" " * (2 << 20)
    )
    assert big.status == 413


# -- last: what the module saw ------------------------------------------------------------------


def test_the_server_output_never_contains_a_token(server: Server, client: Client) -> None:
    client.call("GET", "/jobs", headers={"Authorization": f"Bearer {BAD_TOKEN}"})
    client.call("GET", "/jobs", headers=ADMIN)
    output = server.output.read_text()
    assert "GET /jobs" in output  # the access log is on: the check below has lines to look at
    for token in (*TOKENS, BAD_TOKEN):
        assert token not in output


def test_every_documented_answer_was_seen_by_this_module(request: pytest.FixtureRequest, client: Client) -> None:
    every = {
        (path, method.upper(), int(status))
        for path, operations in client.document["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }
    assert client.seen - every == set()  # whatever ran answered only what the document promises
    module_tests = {item.name for item in request.session.items if item.module is sys.modules[__name__]}
    everything = {name for name, value in globals().items() if name.startswith("test_") and callable(value)}
    if {name.partition("[")[0] for name in module_tests} == everything:  # the whole module ran: all of it was seen
        documented = {answer for answer in every if answer[2] not in NOT_PROVOKED_HERE} - NOT_PROVOKED_HERE_FOR
        assert documented - client.seen == set()


def test_gunicorn_stops_cleanly_on_sigterm(server: Server) -> None:
    assert stop(server.process) == 0
    assert os.path.getsize(server.output) > 0
