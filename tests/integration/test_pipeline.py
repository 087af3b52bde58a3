"""Files of every format go through real `dramatiq actors` workers into a real customer DB."""

from __future__ import annotations

import io
import time
from datetime import datetime

import openpyxl

from tests.conftest import query
from tests.integration.conftest import Pipeline

USERS_HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"


def rows_of(pipeline: Pipeline, customer: str, job_id: str, table: str = "users") -> list[tuple[int, dict]]:
    return query(
        pipeline.customer_dsns[customer],
        f"SELECT source_row, data FROM {table} WHERE job_id = %s ORDER BY source_row",
        (job_id,),
    )


def logs_of(pipeline: Pipeline, job_id: str) -> list[tuple[str, int | None, str | None, str]]:
    return query(
        pipeline.app_dsn,
        "SELECT level, row_number, field, message FROM import_logs WHERE job_id = %s ORDER BY id",
        (job_id,),
    )


def test_a_csv_file_lands_as_typed_jsonb_rows_with_exact_counts(pipeline: Pipeline) -> None:
    content = (
        USERS_HEADER
        + "u1,ann@example.com,Ann,Lee,student,+42,yes,2024-03-01T09:30:00Z\n"
        + 'u2,zoe@example.com,"Zoë","Smith, Jr.",teacher,,No,\n'
        + "u3,not-an-email,Bob,,admin,30,1,\n"
        + 'u4,li@example.com,"山田","multi\nline",student,4.5,0,\n'
        + "u5,eve@example.com,Eve,,,150,TRUE,\n"
    ).encode()
    job = pipeline.run("acme", "users", "users.csv", content)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (5, 3, 2, 3)
    rows = dict(rows_of(pipeline, "acme", job.id))
    assert sorted(rows) == [1, 2, 5]
    assert rows[1] == {
        "external_id": "u1",
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "role": "student",
        "age": 42,
        "active": True,
        "created_at": "2024-03-01T09:30:00Z",
    }
    assert rows[2] == {
        "external_id": "u2",
        "email": "zoe@example.com",
        "first_name": "Zoë",
        "last_name": "Smith, Jr.",
        "role": "teacher",
        "active": False,
    }
    assert rows[5]["age"] == 150 and rows[5]["active"] is True and "role" not in rows[5]
    # Chunks end in any order, and so do their log lines.
    errors = sorted((r, f) for level, r, f, _ in logs_of(pipeline, job.id) if level == "error")
    assert errors == [(3, "email"), (4, "age")]


def test_a_tsv_file_with_an_unknown_column_imports_and_warns_once(pipeline: Pipeline) -> None:
    content = "external_id\tname\tcountry\tseats\tnotes\nO1\tMüller GmbH\tDE\t10\tx\nO2\tAcme\tusa\t3\ty\n".encode()
    job = pipeline.run("globex", "organizations", "orgs.tsv", content)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (2, 1, 1, 1)
    assert rows_of(pipeline, "globex", job.id, "organizations") == [
        (1, {"external_id": "O1", "name": "Müller GmbH", "country": "DE", "seats": 10})
    ]
    warnings = [m for level, _, _, m in logs_of(pipeline, job.id) if level == "warning"]
    assert len(warnings) == 1 and "notes" in warnings[0]


def test_a_key_value_file_imports_and_logs_its_malformed_line(pipeline: Pipeline) -> None:
    content = (
        b"# courses\n"
        b'external_id=C1 title="Intro to \\"Python\\"" credits=3.5 active=yes start_date=2025-01-15\n'
        b"\n"
        b"external_id=C2 title=Rust start_date=2025-02-30\n"
        b'external_id=C3 title="unterminated\n'
        b"external_id=C4 title=Go credits=0\n"
    )
    job = pipeline.run("acme", "courses", "courses.kv", content)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (4, 2, 2)
    rows = rows_of(pipeline, "acme", job.id, "courses")
    assert rows == [
        (
            1,
            {
                "external_id": "C1",
                "title": 'Intro to "Python"',
                "credits": 3.5,
                "active": True,
                "start_date": "2025-01-15",
            },
        ),
        (4, {"external_id": "C4", "title": "Go", "credits": 0}),
    ]
    errors = {r: f for level, r, f, _ in logs_of(pipeline, job.id) if level == "error"}
    assert errors == {2: "start_date", 3: None}


def test_an_xlsx_file_keeps_native_cell_types(pipeline: Pipeline) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["external_id", "email", "age", "active", "created_at"])
    sheet.append([1001, "a@example.com", 30, True, datetime(2024, 5, 6, 7, 8, 9)])
    sheet.append(["x2", "b@example.com", 31.0, False, None])
    sheet.append(["x3", None, 5, True, None])
    sheet.append([None, None, None, None, None])
    buffer = io.BytesIO()
    book.save(buffer)
    job = pipeline.run("acme", "users", "users.xlsx", buffer.getvalue())
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (3, 2, 1)
    rows = dict(rows_of(pipeline, "acme", job.id))
    assert rows[1] == {
        "external_id": "1001",
        "email": "a@example.com",
        "age": 30,
        "active": True,
        "created_at": "2024-05-06T07:08:09Z",
    }
    assert rows[2] == {"external_id": "x2", "email": "b@example.com", "age": 31, "active": False}


def test_an_xlsx_sheet_of_many_chunks_with_a_header_row_is_read_once_and_cleaned_up(pipeline: Pipeline) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Users export, March"])
    sheet.append([])
    sheet.append(["external_id", "email", "age"])
    for n in range(1, 11):  # 4 chunks of 3 rows (sheet rows 4-13); row 8 has a bad email
        sheet.append([f"s{n}", "bad" if n == 5 else f"s{n}@example.com", n])
    buffer = io.BytesIO()
    book.save(buffer)
    job = pipeline.run("acme", "users", "titled.xlsx", buffer.getvalue(), {"header_row": 3})
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.chunks_total) == (10, 9, 1, 4)
    rows = dict(rows_of(pipeline, "acme", job.id))
    assert sorted(rows) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert rows[10] == {"external_id": "s10", "email": "s10@example.com", "age": 10}
    errors = [(r, f, m) for level, r, f, m in logs_of(pipeline, job.id) if level == "error"]
    assert [(r, f) for r, f, _ in errors] == [(5, "email")]
    # Every chunk read its cells from the customer DB; they went with the job's end.
    cells = query(
        pipeline.customer_dsns["acme"], "SELECT count(*) FROM import_service.chunk_cells WHERE job_id = %s", (job.id,)
    )
    assert cells == [(0,)]


def test_a_file_of_many_chunks_is_counted_exactly_and_logs_are_capped(pipeline: Pipeline) -> None:
    lines = [f"u{i},bad{i}\n" if i % 2 else f"u{i},ok{i}@example.com\n" for i in range(1, 21)]
    content = ("external_id,email\n" + "".join(lines)).encode()
    job = pipeline.run("acme", "users", "many.csv", content)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (20, 10, 10, 10)
    assert [r for r, _ in rows_of(pipeline, "acme", job.id)] == list(range(2, 21, 2))
    errors = [row for level, row, _, _ in logs_of(pipeline, job.id) if level == "error" and row is not None]
    assert len(errors) == 5  # max_logged_errors is 5 here; the counts above stay complete


def test_on_invalid_fail_fails_the_job_and_leaves_no_rows(pipeline: Pipeline) -> None:
    content = (USERS_HEADER + "u1,a@example.com,,,,,,\nu2,nope,,,,,,\n").encode()
    job = pipeline.run("acme", "users", "strict.csv", content, {"on_invalid": "fail"})
    assert job.status == "failed"
    assert "on_invalid" in job.error and "1 of 2" in job.error
    assert rows_of(pipeline, "acme", job.id) == []


def test_a_dry_run_counts_but_inserts_nothing(pipeline: Pipeline) -> None:
    content = (USERS_HEADER + "u1,a@example.com,,,,,,\nu2,nope,,,,,,\n").encode()
    job = pipeline.run("acme", "users", "dry.csv", content, {"dry_run": True})
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (2, 1, 1, 0)
    assert rows_of(pipeline, "acme", job.id) == []


def test_a_missing_required_column_fails_the_job_naming_it(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "noemail.csv", b"external_id,first_name\nu1,Ann\n")
    assert job.status == "failed"
    assert "email" in job.error and "line 1" in job.error
    assert rows_of(pipeline, "acme", job.id) == []


def test_undecodable_bytes_fail_the_job_naming_the_line_and_leave_no_rows(pipeline: Pipeline) -> None:
    good = "".join(f"u{i},u{i}@example.com\n" for i in range(1, 8))
    content = b"external_id,email\n" + good.encode() + b"u9,\xff\xfe@example.com\n"
    job = pipeline.run("acme", "users", "latin.csv", content)
    assert job.status == "failed"
    assert "line 9" in job.error
    assert rows_of(pipeline, "acme", job.id) == []
    leftover = query(
        pipeline.customer_dsns["acme"], "SELECT count(*) FROM pg_tables WHERE schemaname = 'import_staging'"
    )
    assert leftover == [(0,)]


def test_a_header_only_file_succeeds_with_zero_rows(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "empty.csv", USERS_HEADER.encode())
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_inserted) == (0, 0)


def test_an_empty_file_fails_with_a_clear_error(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "zero.csv", b"")
    assert job.status == "failed"
    assert "empty" in job.error


def test_the_queue_is_left_with_no_pending_messages(pipeline: Pipeline) -> None:
    job = pipeline.run("globex", "users", "q.csv", b"external_id,email\nq1,q@example.com\n")
    assert job.status == "succeeded"
    # The last message is acked just after the job row is closed: allow that moment.
    deadline, pending = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        pending = query(pipeline.app_dsn, "SELECT count(*) FROM dramatiq.queue WHERE state IN ('queued', 'consumed')")
        if pending == [(0,)]:
            break
        time.sleep(0.05)
    assert pending == [(0,)]


def test_every_stage_that_ends_clears_its_running_mark(pipeline: Pipeline) -> None:
    """The transaction that ends a stage clears stage_running (no separate leave): a mark left
    behind would count as a crash when the stage runs again."""
    content = (USERS_HEADER + "v1,v1@example.com,V,,,,,\nv2,bad,W,,,,,\n").encode()
    jobs = [
        pipeline.run("acme", "users", "ok.csv", content),
        pipeline.run("acme", "users", "up.csv", content, {"mode": "upsert"}),
        pipeline.run("acme", "users", "fails.csv", content, {"on_invalid": "fail"}),
        pipeline.run("acme", "users", "dry.csv", content, {"dry_run": True}),
    ]
    assert [job.status for job in jobs] == ["succeeded", "succeeded", "failed", "succeeded"]
    marks = query(
        pipeline.app_dsn,
        "SELECT stage_running, stage_crashes FROM import_jobs WHERE id = ANY(%s::uuid[])",
        ([job.id for job in jobs],),
    )
    assert marks == [(None, 0)] * 4
