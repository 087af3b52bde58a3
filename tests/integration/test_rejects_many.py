"""Thousands of invalid rows through real workers: the log stops at max_logged_errors, the rejects do not (SPEC 14)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import pytest

from service.edges.api import OPERATOR, Api
from tests.conftest import Databases, query
from tests.integration.conftest import Pipeline, make_pipeline

ROWS = 6_000  # data rows; every sixth one is valid
MAX_LOGGED = 1_000
CHUNK_ROWS = 700  # 9 chunks: the log cap is reached in the middle of one
HEADER = ["external_id", "email", "first_name", "age", "role", "notes"]


@pytest.fixture(scope="module")
def big_pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The conftest pipeline, its workers restarted with this module's log cap and chunk size.

    The workers are `dramatiq actors` processes reading the environment, so the settings go
    into `env` as well as into the test process's Config (enqueue, the API)."""
    steps = make_pipeline(databases, tmp_path_factory, ["acme"])
    pipeline = next(steps)
    try:
        pipeline.env.update(MAX_LOGGED_ERRORS=str(MAX_LOGGED), CHUNK_ROWS=str(CHUNK_ROWS))
        pipeline.config = pipeline.config.with_(max_logged_errors=MAX_LOGGED, chunk_rows=CHUNK_ROWS)
        pipeline.restart_workers()
        yield pipeline
    finally:
        steps.close()  # make_pipeline's own clean-up: stops the (new) workers


def row_for(n: int) -> tuple[list[str], set[str]]:
    """Data row n (its source_row): its cells as read and the fields its errors must name (none: valid)."""
    kind = n % 6
    if kind == 0:
        return [f"v{n}", f"v{n}@example.com", f"Val{n}", str(n % 100), "student", "ok"], set()
    if kind == 1:
        cells, fields = [f"b{n}", f"not-an-email-{n}", "Bad", "30", "teacher", f"n{n}"], {"email"}
    elif kind == 2:
        cells, fields = [f"m{n}", "", "Missing", "", "admin", f"n{n}"], {"email"}
    elif kind == 3:
        cells, fields = ["", f"x{n}@example.com", "NoId", "5", "", f"n{n}"], {"external_id"}
    elif kind == 4:
        cells, fields = [f"a{n}", f"a{n}@example.com", 'O"Neil, Jr', "151", "student", f"n, {n}"], {"age"}
    else:
        cells, fields = [f"r{n}", f"r{n}@example.com", "Two", "abc", "king", f"n{n}"], {"role", "age"}
    return cells, fields


def line_of(cells: list[str]) -> str:
    """A CSV line as written by hand: a cell with a comma or a quote is quoted, quotes doubled."""
    return ",".join('"' + c.replace('"', '""') + '"' if ("," in c or '"' in c) else c for c in cells)


def test_five_thousand_rejects_are_all_kept_while_the_log_stops_at_its_cap(big_pipeline: Pipeline) -> None:
    pipeline = big_pipeline
    rows = {n: row_for(n) for n in range(1, ROWS + 1)}
    lines = {n: line_of(cells) for n, (cells, _) in rows.items()}
    invalid = {n: fields for n, (_, fields) in rows.items() if fields}
    valid = sorted(set(rows) - set(invalid))
    assert (len(invalid), len(valid)) == (5_000, 1_000)
    content = (",".join(HEADER) + "\n" + "".join(lines[n] + "\n" for n in sorted(rows))).encode()

    job = pipeline.run("acme", "users", "many-rejects.csv", content)

    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (ROWS, 1_000, 5_000)
    assert (job.rows_inserted, job.rows_updated, job.rows_unchanged) == (1_000, 0, 0)
    assert job.chunks_total == -(-ROWS // CHUNK_ROWS)  # the workers planned with CHUNK_ROWS from env
    inserted = query(
        pipeline.customer_dsns["acme"], "SELECT source_row FROM users WHERE job_id = %s ORDER BY source_row", (job.id,)
    )
    assert [r for (r,) in inserted] == valid

    # The log: exactly the cap of row-error lines (5 if the override had not reached the workers).
    logged = query(
        pipeline.app_dsn,
        "SELECT row_number, field FROM import_logs WHERE job_id = %s AND level = 'error' ORDER BY id",
        (job.id,),
    )
    assert len(logged) == MAX_LOGGED and job.logged_errors == MAX_LOGGED
    assert all(row is not None and field in invalid.get(row, ()) for row, field in logged), logged[:5]
    assert len(set(logged)) == MAX_LOGGED  # no error logged twice

    # Every reject, through the API the REST and gRPC edges call, page by page.
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    seen: list[int] = []
    after, pages = None, 0
    while True:
        page, after = api.rejects_page(OPERATOR, job.id, after, 1000)
        pages += 1
        for reject in page:
            n = reject["source_row"]
            seen.append(n)
            assert reject["record"] == dict(zip(HEADER, rows[n][0], strict=True)), n
            assert {e["field"] for e in reject["errors"]} == invalid[n], (n, reject["errors"])
            assert len(reject["errors"]) == len(invalid[n]), (n, reject["errors"])
        if after is None:
            break
    assert pages == 5
    assert seen == sorted(invalid)  # each source_row once, in order, and exactly the invalid ones

    # The rejects.csv, as GET /jobs/<id>/rejects.csv streams it.
    body = b"".join(api.rejects_csv(OPERATOR, job.id))
    parsed = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert parsed[0] == [*HEADER, "errors"]
    assert len(parsed) == 1 + 5_000
    for n, cells in zip(sorted(invalid), parsed[1:], strict=True):
        assert cells[:-1] == rows[n][0], n
        named = {re.split("[: ]", part, maxsplit=1)[0] for part in cells[-1].split("; ")}  # "email is required"
        assert named == invalid[n], (n, cells[-1])
    csv_lines = body.split(b"\r\n")
    assert len(csv_lines) == 1 + 5_000 + 1 and csv_lines[-1] == b""
    line_at = dict(zip(sorted(invalid), csv_lines[1:-1], strict=True))
    spot = {
        7: lines[7] + ",email: 'not-an-email-7' is not a valid email address",
        2: lines[2] + ",email is required",
        3_003: lines[3_003] + ",external_id is required",
        5_998: lines[5_998] + ",age: 151 is more than the maximum of 150",
    }
    assert lines[5_998] == 'a5998,a5998@example.com,"O""Neil, Jr",151,student,"n, 5998"'
    for n, expected in spot.items():
        assert line_at[n] == expected.encode(), n
