"""The edges show the write-side features (SPEC 12-13) without a database: the gRPC Job, the
status codes of job-state conflicts, importctl's option parsing and summaries, and `watch`."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from service.edges.api import JobNotFound
from service.edges.cli.main import parse_options, summary
from service.edges.cli.watch import render_bar, render_line, watch
from service.edges.grpc.server import job_message, status_for
from service.errors import JobConflict, RequestRefused
from service.storage.jobs import Job

JOB_ID = "0b8f4a52-1a53-4f0e-9a51-7c0f1b2e6d10"
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UNDONE = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)


def a_job(**changes: Any) -> Job:
    """A finished upsert job whose every count differs, with these changes."""
    row: dict[str, Any] = {
        "id": JOB_ID,
        "customer_id": "acme",
        "product_type": "users",
        "blob_uri": "file:///blobs/acme/users.csv",
        "options": {"mode": "upsert"},
        "status": "succeeded",
        "rows_total": 12,
        "rows_valid": 10,
        "rows_invalid": 2,
        "rows_inserted": 4,
        "rows_updated": 3,
        "rows_unchanged": 2,
        "rows_duplicate": 1,
        "rows_deleted": 7,
        "error": None,
        "created_at": AT,
        "started_at": AT,
        "finished_at": AT,
        "updated_at": AT,
        "plan": None,
        "chunks_total": None,
        "chunks_done": 0,
        "logged_errors": 0,
        "idempotency_key": None,
    }
    row.update(changes)
    return Job.from_row(row)


# -- gRPC -------------------------------------------------------------------------------------


def test_the_grpc_job_carries_every_write_mode_count_in_fields_15_to_18() -> None:
    message = job_message(a_job())
    numbers = {field.name: field.number for field in message.DESCRIPTOR.fields}
    assert [numbers[name] for name in ("rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted")] == [
        15,
        16,
        17,
        18,
    ]
    counts = (message.rows_inserted, message.rows_updated, message.rows_unchanged, message.rows_duplicate)
    assert counts + (message.rows_deleted,) == (4, 3, 2, 1, 7)


def test_the_grpc_job_sets_undone_at_field_19_only_once_the_job_is_undone() -> None:
    assert not job_message(a_job()).HasField("undone_at")
    undone = job_message(a_job(status="undone", undone_at=UNDONE))
    assert undone.DESCRIPTOR.fields_by_name["undone_at"].number == 19
    assert undone.status == "undone"
    assert undone.undone_at.ToDatetime(tzinfo=UTC) == UNDONE


def test_a_job_state_conflict_is_failed_precondition_with_its_reason() -> None:
    reason = "undo job 7c1 first: it changed the same rows later"
    assert status_for(JobConflict(reason)) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    assert status_for(JobNotFound(f"no job {JOB_ID}"))[0] == grpc.StatusCode.NOT_FOUND


# -- importctl -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dry_run", "atomic", "allow_empty"])
@pytest.mark.parametrize(
    "text, value", [("true", True), ("Yes", True), ("1", True), ("false", False), ("NO", False), (" 0 ", False)]
)
def test_every_boolean_option_parses_the_same_words(name: str, text: str, value: bool) -> None:
    assert parse_options([f"{name}={text}", "mode=upsert"]) == {name: value, "mode": "upsert"}


@pytest.mark.parametrize("name", ["atomic", "allow_empty"])
def test_a_boolean_option_that_is_no_boolean_word_is_refused_naming_it(name: str) -> None:
    with pytest.raises(RequestRefused, match="must be true or false") as refused:
        parse_options([f"{name}=maybe"])
    assert refused.value.field == f"options.{name}"


def test_header_row_parses_as_a_whole_number_and_anything_else_is_refused_naming_it() -> None:
    assert parse_options(["header_row= 3 "]) == {"header_row": 3}
    with pytest.raises(RequestRefused, match="header_row must be a whole number, got 'third'") as refused:
        parse_options(["header_row=third"])
    assert refused.value.field == "options.header_row"


def test_sheet_given_more_than_once_is_a_list_of_sheets_in_that_order() -> None:
    assert parse_options(["sheet=Q1"]) == {"sheet": "Q1"}
    assert parse_options(["sheet=Q2", "dry_run=1", "sheet=Q1", "sheet=Q3"]) == {
        "sheet": ["Q2", "Q1", "Q3"],
        "dry_run": True,
    }


def test_the_summary_shows_every_count_and_when_the_job_was_undone() -> None:
    line = summary(a_job())
    assert "total=12 valid=10 invalid=2 inserted=4 updated=3 unchanged=2 duplicate=1 deleted=7" in line
    assert "undone_at" not in line
    undone = summary(a_job(status="undone", undone_at=UNDONE))
    assert " undone " in undone and f"undone_at={UNDONE.isoformat()}" in undone


# -- importctl watch -------------------------------------------------------------------------------


def test_the_plain_line_and_the_final_bar_show_every_count() -> None:
    counts = "valid=10 invalid=2 inserted=4 updated=3 unchanged=2 duplicate=1 deleted=7"
    assert render_line(a_job(), 12, True) == f"succeeded rows=12/12 {counts}\n"
    assert render_bar(a_job(), 12, True, 100.0).endswith(f"succeeded  {counts}\x1b[K")
    assert "updated=" not in render_bar(a_job(status="running"), 12, False, 100.0)


class ScriptedJobs:
    """Stands in for JobStore: `get` answers the scripted jobs in turn, then the last one."""

    def __init__(self, *jobs: Job) -> None:
        self.jobs = list(jobs)

    def get(self, job_id: str) -> Job:
        return self.jobs.pop(0) if len(self.jobs) > 1 else self.jobs[0]

    def planned_rows(self, job_id: str) -> tuple[int, bool]:
        return 12, True


def test_watch_reports_a_change_of_a_write_mode_count_alone() -> None:
    running = a_job(status="running", rows_updated=0, finished_at=None)
    later = replace(running, rows_updated=3)
    out = io.StringIO()
    final = watch(ScriptedJobs(running, later, a_job()), JOB_ID, out, interactive=False)  # type: ignore[arg-type]
    assert final.status == "succeeded"
    lines = out.getvalue().splitlines()
    assert [line.split(" updated=")[1].split()[0] for line in lines] == ["0", "3", "3"]
