"""JSON Lines (SPEC 18) through real `dramatiq actors` workers into a real customer DB: rows,
rejects with their raw text, rejects.csv, and a replay after the schema was fixed."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.edges.api import OPERATOR, Api
from tests.conftest import ROOT, Databases, query
from tests.integration.conftest import Pipeline, make_pipeline


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("schemas")
    for path in (ROOT / "schemas").glob("*.json"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory, schemas: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(databases, tmp_path_factory, ["j1", "j2"], schemas_dir=schemas)


# Keys through aliases (user_id, e-mail: one spelling per field in a file, as for header names).
LINES = [
    b'\xef\xbb\xbf{"user_id": "u1", "e-mail": "ann@example.com", "age": 34, "active": true, "first_name": null}',
    b'{"user_id": "u2", "e-mail": "bob@example.com", "age": "41", "active": "yes", "nickname": "B"}',
    b"",  # blank: skipped, no row
    b"[1, 2, 3]",  # not an object
    b'{"user_id": "u4", "e-mail": "broken@example.com", "age": 3',  # not valid JSON
    b'{"user_id": "u5", "e-mail": "eve@example.com", "age": 42, "role": "guest"}',  # fails the schema
    b'{"user_id": 6, "e-mail": "six@example.com", "tags": ["a", 1], "active": 1}',  # a number is not a string
    b'{"e-mail": "u7@example.com", "last_name": "M\\u00fcller", "user_id": "u7", "created_at": "2024-03-01T09:30:00Z"}',
]


def rows_of(pipeline: Pipeline, customer: str, job_id: str) -> list[tuple[int, dict]]:
    return query(
        pipeline.customer_dsns[customer],
        "SELECT source_row, data FROM users WHERE job_id = %s ORDER BY source_row",
        (job_id,),
    )


def test_a_json_lines_file_imports_its_objects_and_keeps_its_bad_lines_as_rejects(pipeline: Pipeline) -> None:
    job = pipeline.run("j1", "users", "users.ndjson", b"\n".join(LINES) + b"\n", {"mode": "upsert"})
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (7, 3, 4)
    assert rows_of(pipeline, "j1", job.id) == [
        (1, {"external_id": "u1", "email": "ann@example.com", "age": 34, "active": True}),
        (2, {"external_id": "u2", "email": "bob@example.com", "age": 41, "active": True}),
        (
            7,
            {
                "external_id": "u7",
                "email": "u7@example.com",
                "last_name": "Müller",
                "created_at": "2024-03-01T09:30:00Z",
            },
        ),
    ]
    logs = query(
        pipeline.app_dsn,
        "SELECT level, row_number, field, message FROM import_logs WHERE job_id = %s ORDER BY id",
        (job.id,),
    )
    messages = [message for _, _, _, message in logs]
    assert "unknown key(s) ignored: nickname, tags" in messages
    for alias, field in (("e-mail", "email"), ("user_id", "external_id")):
        assert f"key '{alias}' read as field {field} (an alias)" in messages
    errors = {(row, field): message for level, row, field, message in logs if level == "error"}
    assert errors == {
        (3, None): "line 4: the line is a JSON array, not an object",
        (4, None): "line 5: not valid JSON: Expecting ',' delimiter at the end of the line",
        (5, "role"): "role: 'guest' is not one of student, teacher, admin",
        (6, "external_id"): "external_id: expected a string, got the JSON number 6",
        (6, "active"): "active: expected true or false, got the JSON number 1",
    }
    stored = query(
        pipeline.customer_dsns["j1"],
        "SELECT source_row, record::text FROM import_service.rejects WHERE job_id = %s ORDER BY 1",
        (job.id,),
    )
    assert [(row, json.loads(text)) for row, text in stored] == [
        (3, {"_line": "[1, 2, 3]"}),
        (4, {"_line": '{"user_id": "u4", "e-mail": "broken@example.com", "age": 3'}),
        (5, {"user_id": "u5", "e-mail": "eve@example.com", "age": 42, "role": "guest"}),
        (6, {"user_id": 6, "e-mail": "six@example.com", "tags": ["a", 1], "active": 1}),
    ]
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    table = list(csv.reader(io.StringIO(b"".join(api.rejects_csv(OPERATOR, job.id)).decode())))
    assert table == [
        ["_line", "user_id", "e-mail", "age", "role", "tags", "active", "errors"],
        ["[1, 2, 3]", "", "", "", "", "", "", "line 4: the line is a JSON array, not an object"],
        [
            '{"user_id": "u4", "e-mail": "broken@example.com", "age": 3',
            *[""] * 6,
            "line 5: not valid JSON: Expecting ',' delimiter at the end of the line",
        ],
        ["", "u5", "eve@example.com", "42", "guest", "", "", "role: 'guest' is not one of student, teacher, admin"],
        [
            "",
            "6",
            "six@example.com",
            "",
            "",
            '["a", 1]',
            "1",
            "external_id: expected a string, got the JSON number 6; active: expected true or false, got the JSON number 1",
        ],
    ]
    page, _ = api.rejects_page(OPERATOR, job.id)
    assert page[3]["record"] == {"user_id": "6", "e-mail": "six@example.com", "tags": '["a", 1]', "active": "1"}


def test_a_replay_of_a_json_lines_job_checks_its_stored_json_values_again(pipeline: Pipeline, schemas: Path) -> None:
    content = (
        b'{"external_id": "r1", "email": "r1@example.com", "role": "guest", "age": 30}\n'
        b'{"external_id": "r2", "email": "r2@example.com", "role": "guest", "age": 30.5}\n'
        b"not json at all\n"
        b'{"external_id": "r4", "email": "r4@example.com", "role": "student"}\n'
    )
    original = pipeline.run("j2", "users", "roles.jsonl", content, {"mode": "upsert"})
    assert (original.rows_valid, original.rows_invalid) == (1, 3)
    schema = json.loads((schemas / "users.json").read_text())
    schema["properties"]["role"]["enum"].append("guest")
    (schemas / "users.json").write_text(json.dumps(schema))
    pipeline.restart_workers()
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    replayed = pipeline.wait(api.replay(OPERATOR, original.id).id)
    assert replayed.status == "succeeded", replayed.error
    assert (replayed.rows_total, replayed.rows_valid, replayed.rows_invalid) == (3, 1, 2)
    assert rows_of(pipeline, "j2", replayed.id) == [
        (1, {"external_id": "r1", "email": "r1@example.com", "role": "guest", "age": 30})
    ]
    left = query(
        pipeline.customer_dsns["j2"],
        "SELECT source_row, record::text FROM import_service.rejects WHERE job_id = %s ORDER BY 1",
        (replayed.id,),
    )
    assert [(row, json.loads(text)) for row, text in left] == [
        (2, {"external_id": "r2", "email": "r2@example.com", "role": "guest", "age": 30.5}),
        (3, {"_line": "not json at all"}),
    ]
