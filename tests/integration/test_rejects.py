"""Every invalid row is kept in the customer's database with its cells as read (SPEC 14)."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import openpyxl

from tests.conftest import query
from tests.integration.conftest import Pipeline


def rejects_of(pipeline: Pipeline, customer: str, job_id: str) -> list[tuple[int, Any, Any]]:
    return query(
        pipeline.customer_dsns[customer],
        "SELECT source_row, record::text, errors FROM import_service.rejects WHERE job_id = %s ORDER BY source_row",
        (job_id,),
    )


def test_every_invalid_row_is_kept_with_its_cells_as_read_beyond_the_log_cap(pipeline: Pipeline) -> None:
    bad = "".join(f"b{i},not-an-email-{i},,\n" for i in range(8))
    content = (
        'external_id,email,first_name,notes\nu1,a@x.io,"Zoë ""Z""","multi\nline, with comma"\nu2,nope,007,kept\n' + bad
    ).encode()
    job = pipeline.run("acme", "users", "r.csv", content)
    assert job.status == "succeeded", job.error
    assert (job.rows_valid, job.rows_invalid) == (1, 9)
    logged = query(
        pipeline.app_dsn, "SELECT count(*) FROM import_logs WHERE job_id = %s AND level = 'error'", (job.id,)
    )
    assert logged == [(5,)]  # the log is capped (MAX_LOGGED_ERRORS=5 here) ...
    rejects = rejects_of(pipeline, "acme", job.id)
    assert [row for row, _, _ in rejects] == list(range(2, 11))  # ... the rejects are not
    row, record, errors = rejects[0]
    assert json.loads(record) == ["u2", "nope", "007", "kept"]  # the unknown column too, zeros kept
    assert errors == [{"field": "email", "message": errors[0]["message"]}] and "email" in errors[0]["message"]


def test_a_key_value_reject_keeps_its_keys_in_the_records_order(pipeline: Pipeline) -> None:
    content = b'title="A course" external_id=C1 credits=-2 zeta=last\nexternal_id=C2 title=Fine\n'
    job = pipeline.run("acme", "courses", "c.kv", content)
    assert (job.rows_valid, job.rows_invalid) == (1, 1)
    ((row, record, errors),) = rejects_of(pipeline, "acme", job.id)
    assert row == 1
    assert record == '{"title": "A course", "external_id": "C1", "credits": "-2", "zeta": "last"}'
    assert [e["field"] for e in errors] == ["credits"]


def test_a_spreadsheet_reject_keeps_its_cells_as_text(pipeline: Pipeline) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["external_id", "email", "age", "created_at", "active"])
    sheet.append([1001, "no-at-sign", 42, datetime(2024, 4, 2, 14, 0, 5), True])
    sheet.append(["X-2", "ok@x.io", 7.0, None, False])
    buffer = io.BytesIO()
    book.save(buffer)
    job = pipeline.run("acme", "users", "u.xlsx", buffer.getvalue())
    assert (job.rows_valid, job.rows_invalid) == (1, 1)
    ((_, record, _),) = rejects_of(pipeline, "acme", job.id)
    assert json.loads(record) == ["1001", "no-at-sign", "42", "2024-04-02T14:00:05", "TRUE"]


def test_a_dry_run_keeps_its_rejects_and_writes_no_row(pipeline: Pipeline) -> None:
    job = pipeline.run("globex", "users", "d.csv", b"external_id,email\nd1,ok@x.io\nd2,bad\n", {"dry_run": True})
    assert job.status == "succeeded" and job.rows_inserted == 0
    assert [row for row, _, _ in rejects_of(pipeline, "globex", job.id)] == [2]
    assert query(pipeline.customer_dsns["globex"], "SELECT count(*) FROM users WHERE job_id = %s", (job.id,)) == [(0,)]


def test_rejects_past_the_retention_period_are_purged(pipeline: Pipeline) -> None:
    from service.pipeline import Services, purge_history

    job = pipeline.run("globex", "users", "p.csv", b"external_id,email\np1,bad\n")
    dsn = pipeline.customer_dsns["globex"]
    query(dsn, "UPDATE import_service.rejects SET stored_at = now() - interval '31 days' WHERE job_id = %s", (job.id,))
    fresh = pipeline.run("globex", "users", "p.csv", b"external_id,email\np2,bad\n")
    purge_history(Services(pipeline.config, pipeline.jobs, pipeline.products, pipeline.app_dsn))
    assert rejects_of(pipeline, "globex", job.id) == []
    assert len(rejects_of(pipeline, "globex", fresh.id)) == 1


def test_alias_columns_import_and_each_alias_used_is_logged_once(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "a.csv", b"User_ID,E-Mail,first_name\nal1,al1@x.io,Al\n")
    assert job.status == "succeeded" and job.rows_inserted == 1, job.error
    rows = query(pipeline.customer_dsns["acme"], "SELECT data FROM users WHERE job_id = %s", (job.id,))
    assert rows == [({"external_id": "al1", "email": "al1@x.io", "first_name": "Al"},)]
    infos = query(pipeline.app_dsn, "SELECT message FROM import_logs WHERE job_id = %s AND level = 'info'", (job.id,))
    aliases = sorted(m for (m,) in infos if "alias" in m)
    assert aliases == [
        "column 'E-Mail' read as field email (an alias)",
        "column 'User_ID' read as field external_id (an alias)",
    ]


def test_two_columns_for_one_field_fail_the_job_naming_both(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "b.csv", b"external_id,email,Mail\nx1,a@x.io,b@x.io\n")
    assert job.status == "failed"
    assert "'email'" in job.error and "'Mail'" in job.error and "line 1" in job.error


def test_two_keys_for_one_field_anywhere_in_a_key_value_file_fail_the_job(pipeline: Pipeline) -> None:
    lines = [f"id=k{i} email=k{i}@x.io" for i in range(6)] + ["id=k9 mail=k9@x.io"]
    job = pipeline.run("acme", "users", "c.kv", ("\n".join(lines) + "\n").encode())
    assert job.status == "failed"
    assert "'email'" in job.error and "'mail'" in job.error
    assert query(pipeline.customer_dsns["acme"], "SELECT count(*) FROM users WHERE job_id = %s", (job.id,)) == [(0,)]
