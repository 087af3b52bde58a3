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
    from service.stages.cleanup import purge_history
    from service.stages.services import Services

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


def _api(pipeline: Pipeline) -> Any:
    from service.edges.api import Api

    return Api(pipeline.config, pipeline.jobs, pipeline.products)


def test_the_rejects_csv_gives_back_the_files_cells_byte_for_byte_and_round_trips(pipeline: Pipeline) -> None:
    from service.edges.api import OPERATOR

    content = (
        "external_id;email;first_name;notes\r\n"
        'r1;"bad, with comma";"Zoë ""Z""";"two\nlines"\r\n'
        "r2;ok@x.io;Ann;fine\r\n"
        "0042;also bad;山田;\r\n"
    ).encode()
    job = pipeline.run("globex", "users", "rt.csv", content)
    assert (job.rows_valid, job.rows_invalid) == (1, 2)
    body = b"".join(_api(pipeline).rejects_csv(OPERATOR, job.id))
    lines = body.decode().split("\r\n")
    assert lines[0] == "external_id,email,first_name,notes,errors"
    assert (
        lines[1]
        == 'r1,"bad, with comma","Zoë ""Z""","two\nlines","email: \'bad, with comma\' is not a valid email address"'
    )
    assert lines[2] == "0042,also bad,山田,,email: 'also bad' is not a valid email address"
    assert lines[3] == ""
    half_fixed = body.replace(b"bad, with comma", b"r1@x.io")
    second = pipeline.run("globex", "users", "rejects-1.csv", half_fixed)
    assert (second.rows_valid, second.rows_invalid) == (1, 1)
    again_body = b"".join(_api(pipeline).rejects_csv(OPERATOR, second.id)).decode().split("\r\n")
    assert again_body[0] == "external_id,email,first_name,notes,errors"  # one errors column, new
    assert again_body[1] == lines[2]
    fixed = body.replace(b"bad, with comma", b"r1@x.io").replace(b"also bad", b"z@x.io")
    again = pipeline.run("globex", "users", "rejects.csv", fixed)
    assert again.status == "succeeded" and (again.rows_valid, again.rows_invalid) == (2, 0), again.error
    rows = query(
        pipeline.customer_dsns["globex"], "SELECT data FROM users WHERE job_id = %s ORDER BY source_row", (again.id,)
    )
    assert rows[0][0] == {"external_id": "r1", "email": "r1@x.io", "first_name": 'Zoë "Z"'}
    assert rows[1][0]["external_id"] == "0042" and rows[1][0]["first_name"] == "山田"
    warnings = query(
        pipeline.app_dsn, "SELECT message FROM import_logs WHERE job_id = %s AND level = 'warning'", (again.id,)
    )
    assert [m for (m,) in warnings] == ["unknown column(s) ignored: notes"]  # not `errors`


def test_rejects_page_by_source_row_and_refuse_bad_limits(pipeline: Pipeline) -> None:
    import pytest

    from service.edges.api import OPERATOR, Access, JobNotFound
    from service.errors import RequestRefused

    content = b"external_id,email\n" + b"".join(f"p{i},bad{i}\n".encode() for i in range(7))
    job = pipeline.run("acme", "users", "pg.csv", content)
    api = _api(pipeline)
    first, after = api.rejects_page(OPERATOR, job.id, None, 3)
    assert [r["source_row"] for r in first] == [1, 2, 3] and after == 3
    assert first[0]["record"] == {"external_id": "p0", "email": "bad0"}
    rest, after = api.rejects_page(OPERATOR, job.id, 6, 3)
    assert [r["source_row"] for r in rest] == [7] and after is None
    for bad in ("0x", 1001, -1, True):
        with pytest.raises(RequestRefused):
            api.rejects_page(OPERATOR, job.id, None, bad)
    with pytest.raises(RequestRefused):
        api.rejects_page(OPERATOR, job.id, "x", 5)
    with pytest.raises(JobNotFound):
        api.rejects_page(Access(frozenset({"globex"})), job.id)


def test_a_key_value_rejects_csv_has_every_key_in_first_seen_order(pipeline: Pipeline) -> None:
    from service.edges.api import OPERATOR

    content = b"external_id=K1 title=T credits=-1\nexternal_id=K2 title=U\nsubtitle=x external_id=K3 credits=-5\n"
    job = pipeline.run("acme", "courses", "k.kv", content)
    assert job.rows_invalid == 2
    body = b"".join(_api(pipeline).rejects_csv(OPERATOR, job.id)).decode().split("\r\n")
    assert body[0] == "external_id,title,credits,subtitle,errors"
    assert body[1].startswith("K1,T,-1,,credits: ") and "credits: credits" not in body[1]
    assert body[2].startswith("K3,,-5,x,")


def test_tsv_with_a_bom_and_utf16_sources_come_back_as_utf8_csv(pipeline: Pipeline) -> None:
    from service.edges.api import OPERATOR

    text = 'external_id\temail\tfirst_name\r\nt1\tbad\tZoë, "Z"\r\nt2\tok@x.io\tAnn\r\n'
    expected = (
        'external_id,email,first_name,errors\r\nt1,bad,"Zoë, ""Z""",email: \'bad\' is not a valid email address\r\n'
    )
    for name, content in (("b.tsv", b"\xef\xbb\xbf" + text.encode()), ("u.tsv", text.encode("utf-16"))):
        job = pipeline.run("acme", "users", name, content)
        assert (job.rows_valid, job.rows_invalid) == (1, 1), job.error
        body = b"".join(_api(pipeline).rejects_csv(OPERATOR, job.id))
        assert body == expected.encode("utf-8"), name
