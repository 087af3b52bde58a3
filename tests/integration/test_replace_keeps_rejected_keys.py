"""replace with on_invalid "skip" keeps a table row whose key is on an invalid line of the file
(SPEC 12): a whole-roster upload with one bad email does not remove that person. Real workers,
real customer database."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from service.config import Config
from tests.conftest import Databases, query
from tests.integration.conftest import Pipeline, make_pipeline

BADGES = {
    "type": "object",
    "x-key": "code",
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "label": {"type": "string", "minLength": 2},
    },
    "required": ["code", "label"],
    "additionalProperties": False,
}

# A key with no pattern: a JSON number on a JSON Lines record must not pass for its text.
CODES = {
    "type": "object",
    "x-key": "code",
    "properties": {"code": {"type": "string", "minLength": 1}, "label": {"type": "string", "minLength": 2}},
    "required": ["code", "label"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    schemas = tmp_path_factory.mktemp("schemas")
    shutil.copy(Config().schemas_dir / "users.json", schemas / "users.json")
    (schemas / "badges.json").write_text(json.dumps(BADGES))
    (schemas / "codes.json").write_text(json.dumps(CODES))
    yield from make_pipeline(databases, tmp_path_factory, ["acme", "globex"], schemas_dir=schemas)


def table(pipeline: Pipeline, customer: str, product: str, key: str) -> dict[str, dict[str, object]]:
    rows = query(pipeline.customer_dsns[customer], f"SELECT data FROM {product}")  # noqa: S608 (a test's own names)
    return {row[0][key]: row[0] for row in rows}


def warnings(pipeline: Pipeline, job_id: str) -> list[str]:
    return [line.message for line in pipeline.jobs.logs(job_id) if line.level == "warning"]


def test_a_replace_with_one_bad_email_keeps_that_person_and_says_so_once(pipeline: Pipeline) -> None:
    roster = "external_id,email,first_name\n" + "".join(f"u{i},u{i}@example.com,Old\n" for i in range(1, 7))
    first = pipeline.run("acme", "users", "roster.csv", roster.encode(), {"mode": "upsert"})
    assert first.status == "succeeded", first.error
    upload = (
        "external_id,email,first_name\n"
        "u1,u1@example.com,New\n"
        "u2,not-an-email,New\n"  # a bad email: u2 stays as it was
        " u4 ,also-bad,New\n"  # the key as the valid rows read it (stripped): u4 stays
        ",nobody@example.com,New\n"  # no key: keeps nothing
        "u5,u5@example.com,New\n"
        "u5,bad-again,New\n"  # u5 is on a valid line too: that one wins
        "u9,u9@example.com,New\n"
    )
    job = pipeline.run("acme", "users", "upload.csv", upload.encode(), {"mode": "replace", "on_invalid": "skip"})
    assert job.status == "succeeded", job.error
    rows = table(pipeline, "acme", "users", "external_id")
    assert sorted(rows) == ["u1", "u2", "u4", "u5", "u9"]  # u3 and u6 are on no line: deleted
    assert rows["u2"]["first_name"] == "Old" and rows["u4"]["first_name"] == "Old"  # kept as they were
    assert rows["u1"]["first_name"] == "New" and rows["u5"]["first_name"] == "New"
    assert (job.rows_valid, job.rows_invalid, job.rows_deleted) == (3, 4, 2)
    kept = [text for text in warnings(pipeline, job.id) if "kept" in text]
    assert kept == ["replace kept 2 rows of the table, not deleted: their key is on an invalid line of the file"]


def test_a_key_that_is_itself_invalid_keeps_nothing(pipeline: Pipeline) -> None:
    first = pipeline.run("globex", "badges", "b.csv", b"code,label\nABC,one\nABD,two\n", {"mode": "upsert"})
    assert first.status == "succeeded", first.error
    # A row written before the key's pattern was tightened: its key is no longer valid.
    query(
        pipeline.customer_dsns["globex"],
        "INSERT INTO badges (data, job_id, source_row) VALUES (%s, %s, 99)",
        (json.dumps({"code": "abe", "label": "old"}), first.id),
    )
    upload = b"code,label\nABC,one\nABD,x\nabe,x\n"  # ABD: a bad label (kept); abe: a bad key (deleted)
    job = pipeline.run("globex", "badges", "b2.csv", upload, {"mode": "replace", "on_invalid": "skip"})
    assert job.status == "succeeded", job.error
    assert sorted(table(pipeline, "globex", "badges", "code")) == ["ABC", "ABD"]
    assert job.rows_deleted == 1
    assert [text for text in warnings(pipeline, job.id) if "kept" in text] == [
        "replace kept 1 row of the table, not deleted: their key is on an invalid line of the file"
    ]


def test_a_key_value_file_keeps_the_row_named_by_an_alias_on_an_invalid_record(pipeline: Pipeline) -> None:
    lines = "".join(f"external_id=k{i} email=k{i}@example.com\n" for i in range(1, 4))
    first = pipeline.run("globex", "users", "k.kv", lines.encode(), {"mode": "upsert", "format": "kv"})
    assert first.status == "succeeded", first.error
    upload = b"user_id=k1 email=k1@example.com\nuser_id=k2 email=nope\n"  # k2 by its alias, bad email
    job = pipeline.run("globex", "users", "k2.kv", upload, {"mode": "replace", "on_invalid": "skip", "format": "kv"})
    assert job.status == "succeeded", job.error
    assert sorted(table(pipeline, "globex", "users", "external_id")) == ["k1", "k2"]
    assert job.rows_deleted == 1
    assert any("replace kept 1 row" in text for text in warnings(pipeline, job.id))


def test_a_replace_without_invalid_rows_logs_no_kept_line(pipeline: Pipeline) -> None:
    job = pipeline.run(
        "globex", "badges", "b3.csv", b"code,label\nABC,one\n", {"mode": "replace", "on_invalid": "skip"}
    )
    assert job.status == "succeeded", job.error
    assert not [text for text in warnings(pipeline, job.id) if "kept" in text]


def test_a_json_lines_file_keeps_a_key_read_as_json_and_not_one_that_is_a_number(pipeline: Pipeline) -> None:
    first = pipeline.run("acme", "codes", "c.csv", b"code,label\n6,old\n7,old\n8,old\n", {"mode": "upsert"})
    assert first.status == "succeeded", first.error
    upload = (
        '{"code": "6", "label": "six"}\n'
        '{"code": 7, "label": "seven"}\n'  # a number where the key is a string: no key, keeps nothing
        '{"code": "8", "label": "x"}\n'  # a readable key on an invalid record: 8 stays as it was
    )
    job = pipeline.run("acme", "codes", "c.jsonl", upload.encode(), {"mode": "replace", "on_invalid": "skip"})
    assert job.status == "succeeded", job.error
    rows = table(pipeline, "acme", "codes", "code")
    assert sorted(rows) == ["6", "8"] and rows["8"]["label"] == "old" and rows["6"]["label"] == "six"
    assert (job.rows_valid, job.rows_invalid, job.rows_deleted) == (1, 2, 1)
