"""Log lines as text or JSON, with the job's fields, and without DSN passwords."""

from __future__ import annotations

import json
import logging

from service.logs import JobFields, JsonFormatter, TextFormatter, job_context, wrap_line


def record(message: str, *args: object, name: str = "service.pipeline") -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
    JobFields().filter(made)
    return made


def test_a_json_line_carries_the_job_of_its_context_and_only_inside_it() -> None:
    with job_context("j-1", "acme", "validate[3]"):
        inside = json.loads(JsonFormatter().format(record("chunk %d slow", 3)))
    outside = json.loads(JsonFormatter().format(record("idle")))
    assert inside["message"] == "chunk 3 slow" and inside["level"] == "warning"
    assert (inside["job_id"], inside["customer_id"], inside["stage"]) == ("j-1", "acme", "validate[3]")
    assert "job_id" not in outside and outside["logger"] == "service.pipeline"
    assert inside["time"].endswith("+00:00")


def test_text_and_json_lines_hide_dsn_passwords() -> None:
    line = record("cannot reach %s", "postgresql://app:s3cret@db:5432/x password=other")
    assert "s3cret" not in JsonFormatter().format(line) and "other" not in JsonFormatter().format(line)
    assert "s3cret" not in TextFormatter().format(line)
    with job_context("j-2", "beta", "fetch"):
        assert TextFormatter().format(record("x")).endswith("[job=j-2 customer=beta stage=fetch]")


def test_gunicorn_access_lines_get_their_request_fields() -> None:
    atoms = {"m": "POST", "U": "/enqueue", "s": "202", "B": "57", "D": "1500"}
    made = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(m)s %(U)s", (atoms,), None)
    entry = json.loads(JsonFormatter().format(made))
    assert (entry["method"], entry["path"], entry["status"], entry["bytes"], entry["duration_ms"]) == (
        "POST",
        "/enqueue",
        202,
        57,
        1.5,
    )


def test_other_programs_lines_are_wrapped_as_json_and_json_lines_pass() -> None:
    wrapped = json.loads(
        wrap_line("[2026-01-01 00:00:00,000] [PID 7] [MainThread] [dramatiq.MainProcess] [WARNING] hi\n")
    )
    assert (wrapped["logger"], wrapped["level"], wrapped["message"], wrapped["pid"]) == (
        "dramatiq.MainProcess",
        "warning",
        "hi",
        7,
    )
    assert (
        json.loads(wrap_line("Traceback (most recent call last):"))["message"] == "Traceback (most recent call last):"
    )
    assert wrap_line('{"level": "info"}\n') == '{"level": "info"}'
