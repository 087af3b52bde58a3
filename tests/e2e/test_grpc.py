"""The real `python -m service.grpc_server` process with real workers, through the generated stubs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import openpyxl
import psycopg2.extras
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.config import load_config
from service.edges.grpc.server import MAX_WATCHES, PROGRESS, status_for
from service.generated import importer_pb2, importer_pb2_grpc
from service.sources import blob
from service.stages import uploads
from service.storage.app_db import Q
from service.storage.jobs import JobStore
from service.storage.uploads import UploadStore
from tests.conftest import ROOT, query
from tests.e2e.conftest import USERS_CSV, Stack

ACME = (("authorization", "Bearer tok-acme"),)
GLOBEX = (("authorization", "Bearer tok-globex"),)
ADMIN = (("authorization", "Bearer tok-admin"),)
FINAL = ("succeeded", "failed", "cancelled", "undone")
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def target(stack: Stack) -> str:
    """One real gRPC server for the module."""
    _, address = stack.grpc_server()
    return address


@pytest.fixture(scope="module")
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as opened:
        yield opened


@pytest.fixture(scope="module")
def importer(channel: grpc.Channel) -> importer_pb2_grpc.ImporterStub:
    return importer_pb2_grpc.ImporterStub(channel)


def struct(**fields: Any) -> struct_pb2.Struct:
    """A Struct holding these fields."""
    message = struct_pb2.Struct()
    message.update(fields)
    return message


def users_request(stack: Stack, customer: str = "acme", **extra: Any) -> struct_pb2.Struct:
    """An Enqueue request for a fresh users file of that customer."""
    path = stack.blob(customer, f"users-{uuid.uuid4().hex[:8]}.csv")
    return struct(customer_id=customer, product_type="users", blob_uri=blob.uri_for(path), **extra)


def refusal(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Make a call that must fail; return its error."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, timeout=TIMEOUT, **kwargs)
        if isinstance(result, Iterator):
            list(result)
    return caught.value


def wait_finished(importer: importer_pb2_grpc.ImporterStub, job_id: str) -> importer_pb2.Job:
    """Poll GetJob until the job reaches a final status."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = importer.GetJob(importer_pb2.GetJobRequest(job_id=job_id), metadata=ACME, timeout=TIMEOUT)
        if job.status in FINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {TIMEOUT} s")


def job_nobody_runs(stack: Stack, options: dict[str, Any] | None = None) -> str:
    """A job row without a queue message: it stays queued, its times and error stay null."""
    path = stack.blob("acme", f"idle-{uuid.uuid4().hex[:8]}.csv")
    job_id = str(uuid.uuid4())
    store = JobStore(stack.app_dsn, maxconn=1)
    try:
        with store.transaction() as cur:
            row = {"id": job_id, "customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
            row.update(options=psycopg2.extras.Json(options or {}), idempotency_key=None, request_hash=None)
            cur.execute(Q["insert_job"], row)
    finally:
        store.close()
    return job_id


def test_an_enqueued_job_runs_to_succeeded_and_get_job_reports_it(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack, options={"format": "csv"}), metadata=ACME, timeout=TIMEOUT)
    assert dict(reply) == {"job_id": reply["job_id"], "status": "queued"}
    job = wait_finished(importer, reply["job_id"])
    assert job.status == "succeeded"
    assert (job.customer_id, job.product_type, job.job_id) == ("acme", "users", reply["job_id"])
    assert dict(job.options) == {"format": "csv"}
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (3, 2, 1, 2)
    assert (job.chunks_done, job.chunks_total) == (1, 1)  # the REST view's progress, too
    assert job.HasField("created_at") and job.HasField("started_at") and job.HasField("finished_at")
    assert job.created_at.ToDatetime() <= job.started_at.ToDatetime() <= job.finished_at.ToDatetime()
    assert not job.HasField("error")


def test_a_plain_file_job_run_by_the_workers_carries_its_source_unknowns_unset(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    job = wait_finished(importer, reply["job_id"])
    assert job.status == "succeeded", job.error
    assert job.HasField("source")
    assert job.source == importer_pb2.Source(scheme="file", format="csv")
    assert job.source.HasField("format") and not job.source.HasField("compression")
    assert not job.source.HasField("member") and job.source.member == ""
    request = importer_pb2.GetJobRequest(job_id=reply["job_id"])
    (watched,) = importer.WatchJob(request, metadata=ACME, timeout=TIMEOUT)  # ended: sent once
    assert watched.source == job.source


def test_a_queued_job_carries_its_format_option_as_the_sources_format(stack: Stack, importer: Any) -> None:
    request = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack, {"format": "kv"}))
    job = importer.GetJob(request, metadata=ACME, timeout=TIMEOUT)
    assert job.status == "queued" and job.source == importer_pb2.Source(scheme="file", format="kv")
    unformatted = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack))
    source = importer.GetJob(unformatted, metadata=ACME, timeout=TIMEOUT).source
    assert source.scheme == "file" and not source.HasField("format") and source.format == ""


def test_a_list_of_sheets_in_the_struct_imports_them_as_one_job_in_that_order(stack: Stack, importer: Any) -> None:
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Jan"
    for row in (["external_id", "email"], ["j1", "j1@example.com"], ["j2", "broken"]):
        first.append(row)
    second = book.create_sheet("Feb")
    for row in (["EMAIL", "External_ID"], ["f1@example.com", "f1"]):
        second.append(row)
    path = stack.blob_root / "acme" / f"months-{uuid.uuid4().hex[:8]}.xlsx"
    book.save(path)
    request = struct(
        customer_id="acme", product_type="users", blob_uri=blob.uri_for(path), options={"sheet": ["Feb", "Jan"]}
    )
    reply = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)
    job = wait_finished(importer, reply["job_id"])
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (3, 2, 1, 2)
    assert list(job.options["sheet"]) == ["Feb", "Jan"]
    rows = query(
        stack.customer_dsns["acme"],
        "SELECT data->>'external_id', data->>'email' FROM users WHERE job_id = %s ORDER BY source_row",
        (job.job_id,),
    )
    assert rows == [("f1", "f1@example.com"), ("j1", "j1@example.com")]
    logs = query(stack.app_dsn, "SELECT row_number, message FROM import_logs WHERE job_id = %s", (job.job_id,))
    messages = [message for _, message in logs]
    assert "sheet 'Feb': rows 1-1 of the job (its rows 2-2)" in messages
    assert "sheet 'Jan': rows 2-3 of the job (its rows 2-3)" in messages
    assert any(row == 3 and "email" in message for row, message in logs)  # Jan's row 3 is the job's row 3

    bad = struct(customer_id="acme", product_type="users", blob_uri=blob.uri_for(path), options={"sheet": ["Feb", 7]})
    error = refusal(importer.Enqueue, bad, metadata=ACME)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "options.sheet" in (error.details() or "")


def test_get_job_leaves_times_and_error_unset_while_they_are_null(stack: Stack, importer: Any) -> None:
    job = importer.GetJob(importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack)), metadata=ACME, timeout=TIMEOUT)
    assert job.status == "queued"
    assert job.HasField("created_at")
    assert not job.HasField("started_at") and not job.HasField("finished_at") and not job.HasField("error")
    assert not job.HasField("chunks_total") and job.chunks_done == 0  # not planned yet


def test_a_failed_job_carries_its_error(stack: Stack, importer: Any) -> None:
    request = users_request(stack, options={"on_invalid": "fail"})
    reply = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)
    job = wait_finished(importer, reply["job_id"])
    assert job.status == "failed"
    assert job.HasField("error") and "invalid" in job.error
    assert job.HasField("finished_at")


def test_watch_job_streams_each_change_and_ends_after_the_final_status(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    request = importer_pb2.GetJobRequest(job_id=reply["job_id"])
    updates = list(importer.WatchJob(request, metadata=ACME, timeout=TIMEOUT))
    assert updates and all(update.job_id == reply["job_id"] for update in updates)
    assert [u.status for u in updates[:-1] if u.status in FINAL] == []
    last = updates[-1]
    assert last.status == "succeeded"
    assert (last.rows_total, last.rows_valid, last.rows_invalid, last.rows_inserted) == (3, 2, 1, 2)
    progress = [tuple(getattr(u, name) for name in PROGRESS) for u in updates]
    assert all(before != after for before, after in zip(progress, progress[1:], strict=False))
    assert importer.GetJob(request, metadata=ACME, timeout=TIMEOUT) == last


def test_watching_a_finished_job_sends_it_once_and_ends(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    wait_finished(importer, reply["job_id"])
    updates = list(
        importer.WatchJob(importer_pb2.GetJobRequest(job_id=reply["job_id"]), metadata=ACME, timeout=TIMEOUT)
    )
    assert [u.status for u in updates] == ["succeeded"]


def test_the_same_idempotency_key_and_request_returns_the_same_job(stack: Stack, importer: Any) -> None:
    request = users_request(stack, idempotency_key=f"key-{uuid.uuid4()}")
    first = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)
    again = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)
    assert again["job_id"] == first["job_id"]


def test_the_same_idempotency_key_with_another_request_is_already_exists(stack: Stack, importer: Any) -> None:
    key = f"key-{uuid.uuid4()}"
    importer.Enqueue(users_request(stack, idempotency_key=key), metadata=ACME, timeout=TIMEOUT)
    error = refusal(importer.Enqueue, users_request(stack, idempotency_key=key), metadata=ACME)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


DROP = object()  # marks a field to leave out
INVALID = {
    "a missing field": ({"customer_id": DROP}, "customer_id"),
    "a number for customer_id": ({"customer_id": 5}, "customer_id"),
    "a list for options": ({"options": ["csv"]}, "options"),
    "an unknown option": ({"options": {"colour": "red"}}, "options.colour"),
    "a number for a bool option": ({"options": {"dry_run": 1}}, "options.dry_run"),
    "an unknown mode": ({"options": {"mode": "merge"}}, "options.mode"),
    "atomic false with upsert": ({"options": {"mode": "upsert", "atomic": False}}, "options.atomic"),
    "allow_empty without replace": ({"options": {"mode": "upsert", "allow_empty": True}}, "options.allow_empty"),
    "a string for atomic": ({"options": {"atomic": "true"}}, "options.atomic"),
    "a path outside the blob area": ({"blob_uri": "file:///etc/passwd"}, "blob_uri"),
    "an unsupported scheme": ({"blob_uri": "s3://bucket/users.csv"}, "blob_uri"),
    "an unknown customer": ({"customer_id": "nobody"}, "customer_id"),
    "an unknown product": ({"product_type": "spaceships"}, "product_type"),
    "an unknown field": ({"colour": "red"}, "colour"),
    "a number for idempotency_key": ({"idempotency_key": 7}, "idempotency_key"),
    "a customer_id of 500 kB": ({"customer_id": "é" * 500_000}, "customer_id"),
    "20000 unknown fields": ({f"field{n}": n for n in range(20_000)}, "field0"),
}


@pytest.mark.parametrize("change", INVALID.values(), ids=list(INVALID))
def test_a_bad_enqueue_request_is_invalid_argument_naming_the_field(
    stack: Stack, importer: Any, change: tuple[dict[str, Any], str]
) -> None:
    fields, named = change
    request = dict(users_request(stack))
    request.update(fields)
    request = {name: value for name, value in request.items() if value is not DROP}
    error = refusal(importer.Enqueue, struct(**request), metadata=ADMIN)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.details()


def test_a_request_that_is_not_a_well_formed_message_is_invalid_argument(channel: grpc.Channel) -> None:
    raw = channel.unary_unary("/importer.Importer/Enqueue")  # bytes in, bytes out
    deep = struct_pb2.Struct()
    level = deep
    for _ in range(200):  # far past the protobuf parser's nesting limit
        level = level.fields["a"].struct_value
    for payload in (b"\xff\xff\xff", deep.SerializeToString()):
        error = refusal(raw, payload, metadata=ADMIN)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_struct_over_one_mib_is_refused_and_the_server_keeps_serving(stack: Stack, importer: Any) -> None:
    huge = users_request(stack, padding="x" * (1024 * 1024 + 10))
    error = refusal(importer.Enqueue, huge, metadata=ACME)
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    assert reply["status"] == "queued"


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer tok-nobody"),), (("authorization", "tok-acme"),)])
def test_every_importer_call_without_a_good_token_is_unauthenticated(
    stack: Stack, importer: Any, metadata: tuple[tuple[str, str], ...]
) -> None:
    job_id = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack))
    for call, request in (
        (importer.Enqueue, users_request(stack)),
        (importer.GetJob, job_id),
        (importer.WatchJob, job_id),
        (importer.CancelJob, job_id),
        (importer.UndoJob, job_id),
        (importer.ReplayRejects, job_id),
        (importer.ListRejects, importer_pb2.ListRejectsRequest(job_id=job_id.job_id)),
    ):
        error = refusal(call, request, metadata=metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "tok-" not in error.details()


def test_enqueueing_for_another_customer_is_permission_denied(stack: Stack, importer: Any) -> None:
    error = refusal(importer.Enqueue, users_request(stack, "acme"), metadata=GLOBEX)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("kind", ["another customer's job", "an unknown job", "an id that is no UUID"])
def test_a_job_the_caller_may_not_see_is_not_found(stack: Stack, importer: Any, kind: str) -> None:
    job_id = {"another customer's job": job_nobody_runs(stack), "an unknown job": str(uuid.uuid4())}.get(kind, "nope")
    request = importer_pb2.GetJobRequest(job_id=job_id)
    for call in (importer.GetJob, importer.WatchJob):
        assert refusal(call, request, metadata=GLOBEX).code() == grpc.StatusCode.NOT_FOUND
    rejects = importer_pb2.ListRejectsRequest(job_id=job_id)
    assert refusal(importer.ListRejects, rejects, metadata=GLOBEX).code() == grpc.StatusCode.NOT_FOUND


# -- write modes, cancel and undo (SPEC 12-13) -------------------------------------------------


def organizations_request(stack: Stack, **extra: Any) -> tuple[struct_pb2.Struct, str]:
    """An Enqueue request for a fresh acme organizations file, and the prefix of its keys.

    Rows 1 and 3 valid, row 2 invalid (no name), row 4 repeats row 1's key. Jobs nobody runs are
    users jobs, so nothing queued before holds an organizations job up.
    """
    prefix = f"org-{uuid.uuid4().hex[:8]}-"
    rows = [f"{prefix}1,One,FR", f"{prefix}2,,FR", f"{prefix}3,Three,DE", f"{prefix}1,Uno,IT"]
    path = stack.blob("acme", f"{prefix}orgs.csv", "external_id,name,country\n" + "\n".join(rows) + "\n")
    request = struct(customer_id="acme", product_type="organizations", blob_uri=blob.uri_for(path), **extra)
    return request, prefix


def held_rows(stack: Stack, prefix: str) -> int:
    """How many acme organizations rows have a key starting with prefix."""
    statement = "SELECT count(*) FROM organizations WHERE data->>'external_id' LIKE %s"
    return int(query(stack.customer_dsns["acme"], statement, (f"{prefix}%",))[0][0])


def succeeded_upsert(stack: Stack, importer: Any) -> tuple[importer_pb2.Job, str]:
    """Run an upsert of a fresh organizations file to its end, watching it; (last update, prefix)."""
    request, prefix = organizations_request(stack, options={"mode": "upsert"})
    reply = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)
    updates = list(
        importer.WatchJob(importer_pb2.GetJobRequest(job_id=reply["job_id"]), metadata=ACME, timeout=TIMEOUT)
    )
    return updates[-1], prefix


def test_an_upsert_job_runs_and_the_job_carries_every_write_mode_count(stack: Stack, importer: Any) -> None:
    job, prefix = succeeded_upsert(stack, importer)
    assert (job.status, dict(job.options)) == ("succeeded", {"mode": "upsert"})
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (4, 3, 1)
    assert (job.rows_inserted, job.rows_updated, job.rows_unchanged, job.rows_duplicate, job.rows_deleted) == (
        2,
        0,
        0,
        1,
        0,
    )
    assert not job.HasField("undone_at")
    assert held_rows(stack, prefix) == 2
    assert importer.GetJob(importer_pb2.GetJobRequest(job_id=job.job_id), metadata=ACME, timeout=TIMEOUT) == job


def test_undoing_a_succeeded_upsert_returns_it_undone_and_again_unchanged(stack: Stack, importer: Any) -> None:
    job, prefix = succeeded_upsert(stack, importer)
    assert job.status == "succeeded", job
    request = importer_pb2.GetJobRequest(job_id=job.job_id)
    undone = importer.UndoJob(request, metadata=ACME, timeout=TIMEOUT)
    assert undone.status == "undone" and undone.HasField("undone_at")
    assert undone.undone_at.ToDatetime() >= undone.finished_at.ToDatetime()
    assert held_rows(stack, prefix) == 0
    assert importer.UndoJob(request, metadata=ACME, timeout=TIMEOUT) == undone
    assert importer.GetJob(request, metadata=ACME, timeout=TIMEOUT) == undone


def test_undoing_a_failed_job_is_failed_precondition(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack, options={"on_invalid": "fail"}), metadata=ACME, timeout=TIMEOUT)
    assert wait_finished(importer, reply["job_id"]).status == "failed"
    error = refusal(importer.UndoJob, importer_pb2.GetJobRequest(job_id=reply["job_id"]), metadata=ACME)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "failed" in error.details()


def test_cancelling_a_succeeded_job_is_failed_precondition(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    assert wait_finished(importer, reply["job_id"]).status == "succeeded"
    error = refusal(importer.CancelJob, importer_pb2.GetJobRequest(job_id=reply["job_id"]), metadata=ACME)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "succeeded" in error.details()


def test_cancelling_a_queued_job_ends_it_cancelled_and_cancelling_it_again_returns_it_twice(
    stack: Stack, importer: Any
) -> None:
    request = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack))
    first = importer.CancelJob(request, metadata=ACME, timeout=TIMEOUT)
    assert first.status in ("queued", "cancelled")
    deadline = time.monotonic() + 10  # SPEC 13: a cancelled job ends within 10 s
    while (job := importer.GetJob(request, metadata=ACME, timeout=TIMEOUT)).status != "cancelled":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job.HasField("finished_at")
    again = [importer.CancelJob(request, metadata=ACME, timeout=TIMEOUT) for _ in range(2)]
    assert again == [job, job]


@pytest.mark.parametrize("kind", ["another customer's job", "an unknown job", "an id that is no UUID"])
def test_cancel_undo_and_replay_of_a_job_the_caller_may_not_see_are_not_found(
    stack: Stack, importer: Any, kind: str
) -> None:
    job_id = {"another customer's job": job_nobody_runs(stack), "an unknown job": str(uuid.uuid4())}.get(kind, "nope")
    request = importer_pb2.GetJobRequest(job_id=job_id)
    for call in (importer.CancelJob, importer.UndoJob, importer.ReplayRejects):
        assert refusal(call, request, metadata=GLOBEX).code() == grpc.StatusCode.NOT_FOUND
    if kind == "another customer's job":
        assert importer.GetJob(request, metadata=ACME, timeout=TIMEOUT).status == "queued"


def test_replay_rejects_returns_the_new_queued_job_which_validates_the_rejects_again(
    stack: Stack, importer: Any
) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    original = wait_finished(importer, reply["job_id"])
    assert (original.status, original.rows_invalid) == ("succeeded", 1)
    job = importer.ReplayRejects(importer_pb2.GetJobRequest(job_id=original.job_id), metadata=ACME, timeout=TIMEOUT)
    assert job.job_id != original.job_id and (job.status, job.blob_uri) == ("queued", original.blob_uri)
    assert dict(job.options) == {"replay_of": original.job_id}
    assert job.HasField("created_at") and not job.HasField("started_at")
    replayed = wait_finished(importer, job.job_id)
    assert (replayed.status, replayed.rows_total, replayed.rows_invalid) == ("succeeded", 1, 1), replayed


def test_replay_rejects_of_a_queued_job_or_one_without_rejects_is_failed_precondition(
    stack: Stack, importer: Any
) -> None:
    queued = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack))
    error = refusal(importer.ReplayRejects, queued, metadata=ACME)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "queued" in error.details()
    path = stack.blob("acme", f"clean-{uuid.uuid4().hex[:8]}.csv", "external_id,email\nk1,k1@x.io\n")
    request = struct(customer_id="acme", product_type="users", blob_uri=blob.uri_for(path))
    clean = wait_finished(importer, importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)["job_id"])
    assert (clean.status, clean.rows_invalid) == ("succeeded", 0)
    error = refusal(importer.ReplayRejects, importer_pb2.GetJobRequest(job_id=clean.job_id), metadata=ACME)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no rejected rows" in error.details()


def test_list_rejects_streams_a_jobs_rejected_rows_with_their_cells_and_errors(stack: Stack, importer: Any) -> None:
    reply = importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)
    assert wait_finished(importer, reply["job_id"]).rows_invalid == 1
    request = importer_pb2.ListRejectsRequest(job_id=reply["job_id"])
    (reject,) = importer.ListRejects(request, metadata=ACME, timeout=TIMEOUT)
    assert reject.source_row == 2
    assert dict(reject.record.items()) == {"external_id": "u2", "email": "broken", "age": "31"}
    assert [(e.field, e.message) for e in reject.errors] == [("email", "email: 'broken' is not a valid email address")]
    later = importer_pb2.ListRejectsRequest(job_id=reply["job_id"], after=2, limit=1)
    assert list(importer.ListRejects(later, metadata=ACME, timeout=TIMEOUT)) == []


def test_the_admin_token_sees_every_customers_job(stack: Stack, importer: Any) -> None:
    job_id = job_nobody_runs(stack)
    assert importer.GetJob(importer_pb2.GetJobRequest(job_id=job_id), metadata=ADMIN, timeout=TIMEOUT).job_id == job_id


def test_watches_past_the_limit_are_refused_and_cancelled_ones_free_their_place(stack: Stack, importer: Any) -> None:
    request = importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack))
    watches = [importer.WatchJob(request, metadata=ACME, timeout=TIMEOUT) for _ in range(MAX_WATCHES)]
    assert all(next(watch).status == "queued" for watch in watches)
    assert refusal(importer.WatchJob, request, metadata=ACME).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert importer.GetJob(request, metadata=ACME, timeout=TIMEOUT).status == "queued"  # threads left for unary calls
    for watch in watches:
        watch.cancel()
    deadline = time.monotonic() + 10
    while True:  # the server notices a cancelled watch at its next poll
        watch = importer.WatchJob(request, metadata=ACME, timeout=TIMEOUT)
        try:
            assert next(watch).status == "queued"
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.2)
        finally:
            watch.cancel()


def test_an_unexpected_error_is_internal_and_its_log_keeps_no_password(caplog: pytest.LogCaptureFixture) -> None:
    code, message = status_for(RuntimeError("cannot reach postgresql://app:sekret@db/app"))
    assert (code, message) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "RuntimeError" in caplog.text and "sekret" not in caplog.text


def test_health_reports_serving_without_a_token(channel: grpc.Channel) -> None:
    checker = health_pb2_grpc.HealthStub(channel)
    for service in ("", "importer.Importer"):
        answer = checker.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_importer_health_and_reflection_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    answers = stub.ServerReflectionInfo(requests, timeout=TIMEOUT)
    names = {service.name for answer in answers for service in answer.list_services_response.service}
    assert {"importer.Importer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_sigterm_ends_open_watches_and_the_server_exits_0_within_30_s(stack: Stack) -> None:
    process, address = stack.grpc_server()
    with grpc.insecure_channel(address) as opened:
        updates = importer_pb2_grpc.ImporterStub(opened).WatchJob(
            importer_pb2.GetJobRequest(job_id=job_nobody_runs(stack)), metadata=ACME, timeout=TIMEOUT
        )
        assert next(updates).status == "queued"  # the watch is open and waiting
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        with pytest.raises(grpc.RpcError) as ended:
            next(updates)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_bad_configuration_stops_the_server_with_one_line_and_exit_2(stack: Stack) -> None:
    bad = stack.tmp / "broken-config.json"
    bad.write_text("{not json")
    env = dict(stack.env, CONFIG_PATH=str(bad))
    command = [sys.executable, "-m", "service.grpc_server"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grpc_server: configuration error:") and str(bad) in lines[0]


def test_an_address_already_in_use_stops_the_server_with_exit_2(stack: Stack, target: str) -> None:
    env = dict(stack.env, GRPC_ADDR=target)
    command = [sys.executable, "-m", "service.grpc_server"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("grpc_server: configuration error: GRPC_ADDR")


def finished_upload(stack: Stack, customer: str, data: bytes, filename: str) -> str:
    """A finished upload of the customer, made as the REST server's tus route makes one (set-up:
    tests/e2e/test_uploads.py tests that route)."""
    config = load_config(stack.env)
    store = UploadStore(stack.app_dsn, maxconn=1)
    try:
        upload = uploads.create(config, store, customer, len(data), filename, {"filename": filename})
        return uploads.receive(config, store, upload, 0, io.BytesIO(data).read, len(data)).id
    finally:
        store.close()


def test_enqueue_by_upload_id_and_the_job_names_the_upload(stack: Stack, importer: Any) -> None:
    upload_id = finished_upload(stack, "acme", USERS_CSV.encode(), "from grpc.csv")
    request = struct(customer_id="acme", product_type="users", upload_id=upload_id)
    job = wait_finished(importer, importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)["job_id"])
    assert job.status == "succeeded", job.error
    assert job.HasField("upload") and job.upload == importer_pb2.Upload(id=upload_id, filename="from grpc.csv")
    plain = wait_finished(importer, importer.Enqueue(users_request(stack), metadata=ACME, timeout=TIMEOUT)["job_id"])
    assert not plain.HasField("upload")
    theirs = refusal(
        importer.Enqueue, struct(customer_id="globex", product_type="users", upload_id=upload_id), metadata=GLOBEX
    )
    assert theirs.code() == grpc.StatusCode.INVALID_ARGUMENT and "upload_id" in (theirs.details() or "")
