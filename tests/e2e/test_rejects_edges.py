"""Rejected rows (SPEC 14) through all three edges at once: a real gunicorn, a real gRPC server
and the real `importctl`, over one stack and the same jobs, must give back the same rows, and
replay them as new jobs the stack's real workers run.

REST answers are checked against the served OpenAPI document (tests/e2e/test_rest.py's Client).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from service.generated import importer_pb2, importer_pb2_grpc
from service.sources import blob
from tests.conftest import ROOT
from tests.e2e.conftest import Stack
from tests.e2e.test_rest import ACME, ADMIN, CSV_TYPE, GLOBEX, Client, assert_error, job_nobody_runs

IMPORTCTL = shutil.which("importctl", path=str(Path(sys.executable).parent)) or "importctl"
GRPC_ACME = (("authorization", "Bearer tok-acme"),)
TIMEOUT = 120.0

# Every hard cell for a CSV writer, in rows that fail validation (the email): a comma, quotes,
# a line break inside a cell, text that is not ASCII, a leading zero. Rows 2 and 5 are valid.
TRICKY = (
    "external_id,email,first_name,notes\n"
    'r1,"bad, with comma","Zoë ""Z""","two\nlines"\n'
    "r2,ok@x.io,Ann,fine\n"
    "0042,also bad,山田,\n"
    'r4,nope,"say ""hi""",x\n'
    "r5,e@x.io,Eve,ok\n"
)
TRICKY_CSV = (
    "external_id,email,first_name,notes,errors\r\n"
    'r1,"bad, with comma","Zoë ""Z""","two\nlines","email: \'bad, with comma\' is not a valid email address"\r\n'
    "0042,also bad,山田,,email: 'also bad' is not a valid email address\r\n"
    'r4,nope,"say ""hi""",x,email: \'nope\' is not a valid email address\r\n'
).encode()
MANY = 20_000


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    """A real gunicorn for the module, and a client checking its answers against its document."""
    _, base_url = stack.gunicorn()
    conn = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=30)
    conn.request("GET", "/openapi.json")
    document = json.loads(conn.getresponse().read())
    conn.close()
    return Client(base_url, document)


@pytest.fixture(scope="module")
def importer(stack: Stack) -> Iterator[importer_pb2_grpc.ImporterStub]:
    """A real gRPC server for the module, and a stub talking to it."""
    _, target = stack.grpc_server()
    with grpc.insecure_channel(target) as channel:
        yield importer_pb2_grpc.ImporterStub(channel)


def imported(
    stack: Stack,
    client: Client,
    content: str,
    customer: str = "acme",
    options: dict[str, Any] | None = None,
    ends: str = "succeeded",
) -> str:
    """Import this users file over REST as that customer, to its end (`ends`); the job id."""
    path = stack.blob_root / customer / f"rejects-{uuid.uuid4().hex[:8]}.csv"
    path.write_bytes(content.encode())
    headers = {"acme": ACME, "globex": GLOBEX}[customer]
    request = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(path)}
    if options is not None:
        request["options"] = options
    job = client.wait(client.call("POST", "/enqueue", request, headers=headers).body["job_id"], headers, TIMEOUT)
    assert job["status"] == ends, job
    return str(job["job_id"])


@pytest.fixture(scope="module")
def tricky(stack: Stack, client: Client) -> str:
    """An acme job whose three rejects hold every hard cell."""
    return imported(stack, client, TRICKY)


@pytest.fixture
def unreplayed(stack: Stack, client: Client) -> str:
    """A fresh job like tricky: a job is replayed once at a time (SPEC 14), so each replay test has its own."""
    return imported(stack, client, TRICKY)


@pytest.fixture(scope="module")
def clean(stack: Stack, client: Client) -> str:
    """An acme job without a single reject."""
    return imported(stack, client, "external_id,email,age\nc1,c1@x.io,3\nc2,c2@x.io,4\n")


@pytest.fixture(scope="module")
def many(stack: Stack, client: Client) -> str:
    """An acme job with MANY rejects (every row's email is bad)."""
    rows = "".join(f"m{n},not-an-email-{n},{'x' * 60}\n" for n in range(MANY))
    return imported(stack, client, "external_id,email,first_name\n" + rows)


def download(client: Client, job_id: str, headers: dict[str, str] = ACME) -> bytes:
    """The job's rejects.csv over REST, its headers checked."""
    answer = client.call("GET", f"/jobs/{job_id}/rejects.csv", headers=headers)
    assert answer.status == 200, answer
    assert answer.headers["content-type"] == CSV_TYPE
    assert answer.headers["content-disposition"] == f'attachment; filename="{job_id}-rejects.csv"'
    return bytes(answer.body)


def page(client: Client, job_id: str, query: str = "") -> dict[str, Any]:
    """One JSON page of the job's rejects over REST."""
    answer = client.call("GET", f"/jobs/{job_id}/rejects{query}", headers=ACME)
    assert answer.status == 200, answer
    return dict(answer.body)


def streamed(importer: Any, job_id: str, after: int = 0, limit: int = 0) -> list[dict[str, Any]]:
    """ListRejects over gRPC, each Reject in the shape of a REST page's item."""
    request = importer_pb2.ListRejectsRequest(job_id=job_id, after=after, limit=limit)
    return [
        {
            "source_row": reject.source_row,
            "record": dict(reject.record.items()),
            "errors": [{"field": error.field or None, "message": error.message} for error in reject.errors],
        }
        for reject in importer.ListRejects(request, metadata=GRPC_ACME, timeout=TIMEOUT)
    ]


def refusal(importer: Any, **fields: Any) -> grpc.RpcError:
    """A ListRejects call that must fail; its error."""
    with pytest.raises(grpc.RpcError) as caught:
        list(importer.ListRejects(importer_pb2.ListRejectsRequest(**fields), metadata=GRPC_ACME, timeout=TIMEOUT))
    return caught.value


def importctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real importctl against the stack's databases (it acts as the operator: no token)."""
    return subprocess.run([IMPORTCTL, *args], env=stack.env, capture_output=True, timeout=TIMEOUT, cwd=ROOT)


# -- one job, three edges ------------------------------------------------------------------


def test_the_rest_download_is_the_rejects_csv_byte_for_byte(client: Client, tricky: str) -> None:
    assert download(client, tricky) == TRICKY_CSV


def test_grpc_streams_the_same_records_and_errors_as_the_json_page(client: Client, importer: Any, tricky: str) -> None:
    rejects = page(client, tricky, "?limit=1000")["rejects"]
    assert [reject["source_row"] for reject in rejects] == [1, 3, 4]
    assert rejects[0]["record"] == {
        "external_id": "r1",
        "email": "bad, with comma",
        "first_name": 'Zoë "Z"',
        "notes": "two\nlines",
    }
    assert rejects[1]["record"]["external_id"] == "0042" and rejects[1]["record"]["first_name"] == "山田"
    assert streamed(importer, tricky) == rejects


def test_importctl_writes_the_rest_body_to_a_file_or_to_stdout(
    stack: Stack, client: Client, tricky: str, tmp_path: Path
) -> None:
    target = tmp_path / "fixed-me.csv"
    written = importctl(stack, "rejects", tricky, f"--output={target}")
    assert written.returncode == 0, written.stderr
    assert target.read_bytes() == download(client, tricky)
    assert written.stdout == b"" and b"wrote 3 rejects" in written.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["fixed-me.csv"]  # no partial file left behind
    printed = importctl(stack, "rejects", tricky)
    assert (printed.returncode, printed.stdout, printed.stderr) == (0, TRICKY_CSV, b"")


def test_the_downloaded_rejects_csv_fixed_imports_again_without_a_reject(
    stack: Stack, client: Client, tricky: str
) -> None:
    fixed = download(client, tricky).decode()
    for bad in ("bad, with comma", "also bad", "nope"):
        fixed = fixed.replace(bad, f"{uuid.uuid4().hex[:6]}@x.io")
    again = imported(stack, client, fixed)
    assert page(client, again) == {"rejects": [], "next": None}
    assert download(client, again).count(b"\r\n") == 1


# -- paging ---------------------------------------------------------------------------------------


def test_pages_follow_next_by_source_row_and_the_last_says_null(client: Client, tricky: str) -> None:
    first = page(client, tricky, "?limit=2")
    assert ([r["source_row"] for r in first["rejects"]], first["next"]) == ([1, 3], 3)
    second = page(client, tricky, f"?after={first['next']}&limit=2")
    assert ([r["source_row"] for r in second["rejects"]], second["next"]) == ([4], None)
    whole = page(client, tricky, "?limit=3")  # a page that ends at the last reject is the last page
    assert (len(whole["rejects"]), whole["next"]) == (3, None)
    assert page(client, tricky, "?after=4") == {"rejects": [], "next": None}


def test_grpc_pages_with_after_and_limit_like_rest(client: Client, importer: Any, tricky: str) -> None:
    assert streamed(importer, tricky, after=1, limit=1) == page(client, tricky, "?after=1&limit=1")["rejects"]
    assert [r["source_row"] for r in streamed(importer, tricky, after=1)] == [3, 4]
    assert streamed(importer, tricky, after=4) == []


def test_the_default_page_is_100_and_a_page_holds_at_most_1000(client: Client, importer: Any, many: str) -> None:
    default = page(client, many)
    assert (len(default["rejects"]), default["next"]) == (100, default["rejects"][-1]["source_row"])
    assert len(page(client, many, "?limit=1000")["rejects"]) == 1000
    assert len(streamed(importer, many)) == 100  # limit 0: the default
    assert [r["source_row"] for r in streamed(importer, many, after=MANY - 2)] == [MANY - 1, MANY]


@pytest.mark.parametrize(
    "query, field", [("limit=1001", "limit"), ("limit=abc", "limit"), ("limit=0", "limit"), ("after=x", "after")]
)
def test_a_bad_limit_or_after_is_400_naming_it(client: Client, tricky: str, query: str, field: str) -> None:
    assert_error(client.call("GET", f"/jobs/{tricky}/rejects?{query}", headers=ACME), 400, field, field)


@pytest.mark.parametrize(
    "fields, named", [({"limit": 1001}, "limit"), ({"limit": -1}, "limit"), ({"after": -1}, "after")]
)
def test_a_bad_limit_or_after_is_invalid_argument_naming_it(
    importer: Any, tricky: str, fields: dict[str, int], named: str
) -> None:
    error = refusal(importer, job_id=tricky, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.details()


# -- tenants and unknown jobs ---------------------------------------------------------------------


def test_another_customers_job_is_404_and_not_found_like_an_unknown_one(
    stack: Stack, client: Client, importer: Any
) -> None:
    theirs = imported(stack, client, TRICKY, customer="globex")
    for job_id in (theirs, str(uuid.uuid4())):
        for path in (f"/jobs/{job_id}/rejects", f"/jobs/{job_id}/rejects.csv"):
            assert_error(client.call("GET", path, headers=ACME), 404, None, job_id)
        assert refusal(importer, job_id=job_id).code() == grpc.StatusCode.NOT_FOUND
    assert download(client, theirs, GLOBEX) == download(client, theirs, ADMIN) == TRICKY_CSV
    as_operator = importctl(stack, "rejects", theirs)
    assert (as_operator.returncode, as_operator.stdout) == (0, TRICKY_CSV)


def test_importctl_for_an_unknown_job_exits_1_and_writes_nothing(stack: Stack, tmp_path: Path) -> None:
    job_id = str(uuid.uuid4())
    result = importctl(stack, "rejects", job_id, f"--output={tmp_path / 'none.csv'}")
    assert result.returncode == 1
    assert f"no job {job_id}".encode() in result.stderr and b"Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- a job without rejects, and a big one ------------------------------------------------------------


def test_a_job_without_rejects_gives_the_header_alone_an_empty_last_page_and_an_empty_stream(
    stack: Stack, client: Client, importer: Any, clean: str, tmp_path: Path
) -> None:
    assert download(client, clean) == b"external_id,email,age,errors\r\n"
    assert page(client, clean) == {"rejects": [], "next": None}
    assert streamed(importer, clean) == []
    written = importctl(stack, "rejects", clean, f"--output={tmp_path / 'empty.csv'}")
    assert written.returncode == 0 and b"wrote 0 rejects" in written.stderr, written.stderr
    assert (tmp_path / "empty.csv").read_bytes() == b"external_id,email,age,errors\r\n"


def test_a_download_of_20000_rejects_completes_streamed(client: Client, many: str) -> None:
    # What it costs in time and memory is measured by the bench, not here.
    conn = http.client.HTTPConnection(urlsplit(client.base_url).netloc, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/jobs/{many}/rejects.csv", headers=ACME)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"  # no Content-Length: not buffered
        body = response.read()
    finally:
        conn.close()
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert len(rows) == MANY + 1
    assert rows[0] == ["external_id", "email", "first_name", "errors"]
    assert rows[-1][:2] == [f"m{MANY - 1}", f"not-an-email-{MANY - 1}"]


# -- replay (SPEC 14): a new job over the stored rejects, through each edge ---------------------------


def replay_over(edge: str, stack: Stack, client: Client, importer: Any, job_id: str) -> str:
    """Ask one edge, as acme (importctl: as the operator), to replay the job's rejects; the new job's id."""
    if edge == "rest":
        answer = client.call(
            "POST", f"/jobs/{job_id}/replay", raw=b"{}", headers={"Content-Type": "application/json", **ACME}
        )
        assert answer.status == 202 and answer.body["status"] == "queued", answer
        assert answer.headers["location"] == f"/jobs/{answer.body['job_id']}"
        return str(answer.body["job_id"])
    if edge == "grpc":
        job = importer.ReplayRejects(importer_pb2.GetJobRequest(job_id=job_id), metadata=GRPC_ACME, timeout=TIMEOUT)
        assert (job.status, dict(job.options)) == ("queued", {"replay_of": job_id}), job
        assert job.blob_uri and not job.HasField("started_at")
        return str(job.job_id)
    result = importctl(stack, "replay", job_id)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    return result.stdout.decode().strip()


@pytest.mark.parametrize("edge", ["rest", "grpc", "importctl"])
def test_each_edge_replays_a_jobs_rejects_as_a_new_job_that_validates_them_again(
    stack: Stack, client: Client, importer: Any, unreplayed: str, edge: str
) -> None:
    tricky = unreplayed
    original = client.call("GET", f"/jobs/{tricky}", headers=ACME).body
    replay_id = replay_over(edge, stack, client, importer, tricky)
    assert uuid.UUID(replay_id) and replay_id != tricky
    job = client.wait(replay_id, ACME, TIMEOUT)
    assert (job["status"], job["options"], job["product_type"]) == ("succeeded", {"replay_of": tricky}, "users"), job
    assert job["rows_total"] == original["rows_invalid"] == 3
    # The schema has not changed: the same rows fail again, and become the replay's own rejects,
    # under the original file's header and row numbers (replayable in turn).
    assert (job["rows_valid"], job["rows_invalid"], job["rows_inserted"]) == (0, 3, 0)
    assert page(client, replay_id, "?limit=1000") == page(client, tricky, "?limit=1000")
    assert download(client, replay_id) == TRICKY_CSV
    assert client.call("GET", f"/jobs/{tricky}", headers=ACME).body == original  # the original is left as it was


def test_a_replay_reads_no_file_it_succeeds_after_the_original_file_was_deleted(stack: Stack, client: Client) -> None:
    original_id = imported(stack, client, "external_id,email\nd1,d1@x.io\nd2,gone-bad\nd3,also-bad\n")
    original = client.call("GET", f"/jobs/{original_id}", headers=ACME).body
    path = blob.resolve(original["blob_uri"], "acme", stack.blob_root)
    path.unlink()
    answer = client.call("POST", f"/jobs/{original_id}/replay", headers=ACME)
    assert answer.status == 202, answer
    job = client.wait(answer.body["job_id"], ACME, TIMEOUT)
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert job["options"] == {"replay_of": original_id} and job["blob_uri"] == original["blob_uri"]
    assert (job["rows_total"], job["rows_invalid"]) == (original["rows_invalid"], 2)
    assert [r["record"]["external_id"] for r in page(client, job["job_id"])["rejects"]] == ["d2", "d3"]
    assert not path.exists()


def test_a_failed_jobs_replay_keeps_its_options_and_importctl_wait_exits_1_when_it_fails(
    stack: Stack, client: Client
) -> None:
    failed = imported(
        stack, client, "external_id,email\nf1,f1@x.io\nf2,bad\n", options={"on_invalid": "fail"}, ends="failed"
    )
    result = importctl(stack, "replay", failed, "--wait")
    replay_id = result.stdout.decode().strip()
    assert result.returncode == 1, result.stderr
    assert replay_id in result.stderr.decode() and "failed" in result.stderr.decode()
    job = client.call("GET", f"/jobs/{replay_id}", headers=ACME).body
    assert job["options"] == {"on_invalid": "fail", "replay_of": failed}
    assert (job["status"], job["rows_total"], job["rows_invalid"]) == ("failed", 1, 1), job


def test_importctl_replay_wait_prints_the_new_id_and_the_summary_and_exits_0(
    stack: Stack, client: Client, unreplayed: str
) -> None:
    tricky = unreplayed
    result = importctl(stack, "replay", tricky, "--wait")
    assert result.returncode == 0, result.stderr
    replay_id = result.stdout.decode().strip()
    assert uuid.UUID(replay_id) and result.stdout == f"{replay_id}\n".encode()
    summary = result.stderr.decode()
    assert summary.startswith(replay_id) and " succeeded " in summary and "total=3" in summary, summary
    assert client.call("GET", f"/jobs/{replay_id}", headers=ACME).body["options"] == {"replay_of": tricky}


def test_replaying_a_job_without_rejects_is_409_failed_precondition_and_exit_1(
    stack: Stack, client: Client, importer: Any, clean: str
) -> None:
    assert_error(client.call("POST", f"/jobs/{clean}/replay", headers=ACME), 409, None, "no rejected rows")
    with pytest.raises(grpc.RpcError) as caught:
        importer.ReplayRejects(importer_pb2.GetJobRequest(job_id=clean), metadata=GRPC_ACME, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no rejected rows" in caught.value.details()
    result = importctl(stack, "replay", clean, "--wait")
    assert (result.returncode, result.stdout) == (1, b"")
    assert b"no rejected rows" in result.stderr and b"Traceback" not in result.stderr
    listed = client.call("GET", "/jobs?limit=1000", headers=ACME).body["jobs"]
    assert [job["job_id"] for job in listed if job["options"].get("replay_of") == clean] == []  # no job was made


def test_replaying_a_queued_job_is_409_failed_precondition_and_exit_1(
    stack: Stack, client: Client, importer: Any
) -> None:
    queued = job_nobody_runs(stack)  # a courses job: no other job here waits for it
    try:
        assert_error(client.call("POST", f"/jobs/{queued}/replay", headers=ACME), 409, None, "queued")
        with pytest.raises(grpc.RpcError) as caught:
            importer.ReplayRejects(importer_pb2.GetJobRequest(job_id=queued), metadata=GRPC_ACME, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "queued" in caught.value.details()
        result = importctl(stack, "replay", queued)
        assert (result.returncode, result.stdout) == (1, b"") and b"queued" in result.stderr
    finally:
        client.call("POST", f"/jobs/{queued}/cancel", headers=ACME)


def test_replaying_another_customers_job_is_404_and_not_found_like_an_unknown_one(
    stack: Stack, client: Client, importer: Any
) -> None:
    theirs = imported(stack, client, TRICKY, customer="globex")
    for job_id in (theirs, str(uuid.uuid4()), "not-a-uuid"):
        assert_error(client.call("POST", f"/jobs/{job_id}/replay", headers=ACME), 404, None, job_id)
        with pytest.raises(grpc.RpcError) as caught:
            importer.ReplayRejects(importer_pb2.GetJobRequest(job_id=job_id), metadata=GRPC_ACME, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    everyone = client.call("GET", "/jobs?limit=1000", headers=ADMIN).body["jobs"]
    assert [job["job_id"] for job in everyone if job["options"].get("replay_of") == theirs] == []  # none made
    unknown = str(uuid.uuid4())
    result = importctl(stack, "replay", unknown)
    assert (result.returncode, result.stdout) == (1, b"") and f"no job {unknown}".encode() in result.stderr
