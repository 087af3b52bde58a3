"""The edges' part of rejected rows (SPEC 14) without a database: the REST download as a WSGI
stream, the page's parameters, the gRPC Reject and status, ReplayRejects, and how importctl
writes the file.

tests/e2e/test_rejects_edges.py runs the same through real servers; tests/unit/test_openapi.py
checks the 503 of an unreachable customer database against the document.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import grpc
import pytest

from service.config import Config
from service.edges.api import Access, Api
from service.edges.cli.main import RecordCounter, write_file
from service.edges.grpc.server import ImporterServicer, reject_message, status_for
from service.edges.rest.app import create_app
from service.edges.wiring import Edge
from service.errors import CustomerDBUnavailable, JobConflict
from service.generated import importer_pb2
from service.schema.products import ProductRegistry
from service.storage.jobs import Job, JobStore
from service.storage.rejects import Reject, csv_bytes
from tests.unit.test_openapi import a_job

TOKEN = "tok-unit-rejects"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB_ID = "5d0c2a8e-3b1f-4e6a-9c7d-2f4b6a8c0e13"
REPLAY_ID = "5d0c2a8e-3b1f-4e6a-9c7d-2f4b6a8c0e14"
HARD = [
    Reject(1, ["r1", "bad, with comma", 'Zoë "Z"', "two\nlines"], [{"field": "email", "message": "email: bad"}]),
    Reject(3, ["0042", "also bad", "山田", ""], [{"field": None, "message": "the row is empty"}]),
    Reject(4, ["r4", '"', "a\r\nb", '""'], [{"field": "email", "message": "email: bad"}]),
]
NAMES = ["external_id", "email", "first_name", "notes"]


class ScriptedRejectsApi(Api):
    """An Api whose job exists and whose rejects come from a script; it records what it was asked."""

    def __init__(self, config: Config, jobs: JobStore, products: ProductRegistry) -> None:
        super().__init__(config, jobs, products)
        self.pieces: list[bytes] = [b"h\r\n"]
        self.fail_after_first = False
        self.closed = False
        self.asked: list[tuple[Any, ...]] = []

    def job(self, access: Access, job_id: str) -> Job:
        return a_job(JOB_ID, "succeeded")

    def rejects_page(self, access: Access, job_id: str, after: Any = None, limit: Any = None) -> Any:
        self.asked.append((job_id, after, limit))
        return [{"source_row": 7, "record": {"a": "b"}, "errors": []}], 7

    def rejects_csv(self, access: Access, job_id: str) -> Iterator[bytes]:
        def pieces() -> Iterator[bytes]:
            try:
                for number, piece in enumerate(self.pieces):
                    if number and self.fail_after_first:
                        raise CustomerDBUnavailable("customer database 'acme' failed: connection reset")
                    yield piece
            finally:
                self.closed = True

        self.asked.append((job_id,))
        return pieces()

    def replay(self, access: Access, job_id: str) -> Job:
        self.asked.append(("replay", access, job_id))
        if job_id != JOB_ID:
            raise JobConflict(f"job {job_id} has no rejected rows to replay")
        return dataclasses.replace(a_job(REPLAY_ID, "queued"), options={"mode": "upsert", "replay_of": JOB_ID})


@pytest.fixture
def api() -> ScriptedRejectsApi:
    dsn = "host=127.0.0.1 port=1 dbname=app connect_timeout=1"  # never reached
    config = Config(app_db_dsn=dsn, tokens={TOKEN: ("*",)})
    return ScriptedRejectsApi(config, JobStore(dsn, maxconn=1), ProductRegistry.load(config.schemas_dir))


@pytest.fixture
def client(api: ScriptedRejectsApi) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Edge(api.config, api.config.app_db_dsn, api)))


# -- REST ------------------------------------------------------------------------------------------


def test_the_download_is_every_piece_in_order_as_an_attached_utf8_csv(
    api: ScriptedRejectsApi, client: falcon.testing.TestClient
) -> None:
    api.pieces = [b"a,errors\r\n", "é,x\r\n".encode() * 3, b"", b"z,y\r\n"]
    result = client.simulate_get(f"/jobs/{JOB_ID}/rejects.csv", headers=AUTH)
    assert result.status_code == 200
    assert result.content == b"".join(api.pieces)
    assert result.headers["content-type"] == "text/csv; charset=utf-8"
    assert result.headers["content-disposition"] == f'attachment; filename="{JOB_ID}-rejects.csv"'
    assert "content-length" not in result.headers
    assert api.closed


def test_a_failure_once_the_download_started_cuts_it_and_the_log_names_the_job(
    api: ScriptedRejectsApi, client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.pieces, api.fail_after_first = [b"a,errors\r\n", b"b,c\r\n"], True
    with caplog.at_level(logging.ERROR, logger="service.edges.rest.app"), pytest.raises(CustomerDBUnavailable):
        client.simulate_get(f"/jobs/{JOB_ID}/rejects.csv", headers=AUTH)  # the server then drops the connection
    assert f"job {JOB_ID}: rejects.csv cut short" in caplog.text


def test_a_client_that_leaves_early_closes_the_rejects_being_read(api: ScriptedRejectsApi) -> None:
    api.pieces = [b"a,errors\r\n", b"b,c\r\n", b"d,e\r\n"]
    app = create_app(Edge(api.config, api.config.app_db_dsn, api))
    environ = falcon.testing.create_environ(f"/jobs/{JOB_ID}/rejects.csv", headers=AUTH)
    statuses: list[str] = []
    body = app(environ, lambda status, headers: statuses.append(status))
    assert next(iter(body)) == b"a,errors\r\n"
    assert statuses == ["200 OK"] and not api.closed
    body.close()  # what the WSGI server does when the client is gone
    assert api.closed


def test_a_page_passes_after_and_limit_as_given_and_answers_rejects_and_next(
    api: ScriptedRejectsApi, client: falcon.testing.TestClient
) -> None:
    result = client.simulate_get(f"/jobs/{JOB_ID}/rejects", query_string="after=3&limit=abc", headers=AUTH)
    assert result.json == {"rejects": [{"source_row": 7, "record": {"a": "b"}, "errors": []}], "next": 7}
    assert api.asked == [(JOB_ID, "3", "abc")]  # the Api parses and refuses them, naming the field
    client.simulate_get(f"/jobs/{JOB_ID}/rejects", headers=AUTH)
    assert api.asked[-1] == (JOB_ID, None, None)


# -- gRPC ------------------------------------------------------------------------------------------


def test_the_grpc_reject_carries_the_record_as_a_struct_and_a_missing_field_as_empty() -> None:
    message = reject_message(HARD[1], dict(zip(NAMES, HARD[1].cells, strict=True)))
    assert message.source_row == 3
    assert dict(message.record.items()) == {
        "external_id": "0042",
        "email": "also bad",
        "first_name": "山田",
        "notes": "",
    }
    assert [(e.field, e.message) for e in message.errors] == [("", "the row is empty")]
    numbers = {field.name: field.number for field in importer_pb2.Reject.DESCRIPTOR.fields}
    assert numbers == {"source_row": 1, "record": 2, "errors": 3}
    assert {f.name: f.number for f in importer_pb2.FieldError.DESCRIPTOR.fields} == {"field": 1, "message": 2}
    assert {f.name: f.number for f in importer_pb2.ListRejectsRequest.DESCRIPTOR.fields} == {
        "job_id": 1,
        "after": 2,
        "limit": 3,
    }


class Aborted(Exception):
    """What FakeContext.abort raises, as grpc's does, with the code and message."""


class FakeContext:
    """A ServicerContext with this metadata whose abort raises Aborted."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def test_replay_rejects_asks_the_api_as_the_caller_and_returns_the_new_job(api: ScriptedRejectsApi) -> None:
    servicer = ImporterServicer(api, threading.Event())
    request = importer_pb2.GetJobRequest(job_id=JOB_ID)
    job = servicer.ReplayRejects(request, FakeContext((("authorization", f"Bearer {TOKEN}"),)))
    assert (job.job_id, job.status, dict(job.options)) == (REPLAY_ID, "queued", {"mode": "upsert", "replay_of": JOB_ID})
    assert api.asked == [("replay", Access(None), JOB_ID)]


def test_replay_rejects_refused_by_the_jobs_state_is_failed_precondition_and_needs_a_token_first(
    api: ScriptedRejectsApi,
) -> None:
    servicer = ImporterServicer(api, threading.Event())
    request = importer_pb2.GetJobRequest(job_id=REPLAY_ID)
    with pytest.raises(Aborted) as refused:
        servicer.ReplayRejects(request, FakeContext((("authorization", f"Bearer {TOKEN}"),)))
    assert refused.value.args == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"job {REPLAY_ID} has no rejected rows to replay",
    )
    with pytest.raises(Aborted) as anonymous:
        servicer.ReplayRejects(request, FakeContext(()))
    assert anonymous.value.args[0] == grpc.StatusCode.UNAUTHENTICATED
    assert len(api.asked) == 1  # the call without a token never reached the Api


def test_an_unreachable_customer_database_is_unavailable_and_its_name_stays_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = CustomerDBUnavailable("customer database 'importsvc_acme_secret' is unreachable: connection refused")
    with caplog.at_level(logging.WARNING, logger="service.grpc_server"):
        code, message = status_for(error)
    assert (code, message) == (grpc.StatusCode.UNAVAILABLE, "the customer database is unavailable; try again")
    assert "importsvc_acme_secret" in caplog.text


# -- importctl rejects -------------------------------------------------------------------------------


def hard_csv() -> bytes:
    return b"".join(csv_bytes(lambda: iter(HARD), NAMES))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_the_record_counter_agrees_with_a_csv_reader_wherever_the_pieces_are_cut(size: int) -> None:
    body = hard_csv()
    counter = RecordCounter()
    for start in range(0, len(body), size):
        counter.feed(body[start : start + size])
    assert counter.complete == len(list(csv.reader(io.StringIO(body.decode(), newline="")))) == 1 + len(HARD)


def test_the_output_file_holds_the_pieces_and_the_count_of_rejects(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    assert write_file(iter([hard_csv()[:5], hard_csv()[5:]]), target) == len(HARD)
    assert target.read_bytes() == hard_csv()
    assert write_file(iter([b"external_id,errors\r\n"]), target) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def test_a_failed_write_leaves_the_previous_file_as_it_was_and_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"before")

    def failing() -> Iterator[bytes]:
        yield b"external_id,errors\r\n"
        raise CustomerDBUnavailable("customer database 'acme' failed: connection reset")

    with pytest.raises(CustomerDBUnavailable):
        write_file(failing(), target)
    assert target.read_bytes() == b"before"
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def test_an_output_that_is_no_regular_file_is_written_in_place() -> None:
    assert write_file(iter([hard_csv()]), Path("/dev/null")) == len(HARD)
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()
