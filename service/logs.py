"""Process logs, as text or as JSON lines (log_format, SPEC 16), with the job on every line
that concerns one.

A line logged while a job's stage runs carries job_id, customer_id and stage (set by
job_context, a context variable, so each worker thread has its own). Every line passes through
`redact`, below, which hides DSN passwords; the service never logs tokens, secrets or row
content in the first place (a test greps the logs of a full run).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOB_FIELDS = ("job_id", "customer_id", "stage")
_job: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("import_job", default=None)
# The job a request was about, once the Api has found it (and the caller may see it): the REST
# edge copies it into the WSGI environ, where gunicorn's access-log line finds it.
_request_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "import_request_job", default=None
)
ACCESS_JOB_KEYS = ("import.job_id", "import.customer_id")  # WSGI environ keys of that job


@contextmanager
def job_context(job_id: str, customer_id: str, stage: str) -> Iterator[None]:
    """Lines logged inside carry this job, its customer and the stage."""
    token = _job.set({"job_id": job_id, "customer_id": customer_id, "stage": stage})
    try:
        yield
    finally:
        _job.reset(token)


def note_request_job(job_id: str, customer_id: str) -> None:
    """Remember that the request being answered is about this job (see request_job)."""
    _request_job.set((job_id, customer_id))


def request_job(clear: bool = False) -> tuple[str, str] | None:
    """The job the current request was about, if any; clear=True forgets it (a new request)."""
    seen = _request_job.get()
    if clear:
        _request_job.set(None)
    return seen


class JobFields(logging.Filter):
    """Put the current job's fields on each record (a record's own, from extra=, win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _job.get()
        if fields:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, pid, the job's
    fields when the line concerns a job, and the exception's traceback when there is one.
    gunicorn's access lines also carry method, path, status, bytes and duration_ms."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update(_access_fields(record.args))
        if record.exc_info:
            entry["traceback"] = redact("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(atoms: dict[str, Any]) -> dict[str, Any]:
    """The request fields of one of gunicorn's access-log records (its atoms)."""
    fields: dict[str, Any] = {"method": atoms.get("m"), "path": atoms.get("U"), "status": _number(atoms.get("s"))}
    fields["bytes"] = _number(atoms.get("B"))
    for key, name in zip(ACCESS_JOB_KEYS, ("job_id", "customer_id"), strict=True):
        value = atoms.get(f"{{{key}}}e")  # gunicorn's atom of a WSGI environ key
        if isinstance(value, str) and value != "-":
            fields[name] = value
    duration = _number(atoms.get("D"))  # microseconds
    if isinstance(duration, int):
        fields["duration_ms"] = round(duration / 1000, 3)
    return fields


def _number(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


class TextFormatter(logging.Formatter):
    """The text lines, with job= and customer= appended when the line concerns a job."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        job = getattr(record, "job_id", None)
        if job is not None:
            line += f" [job={job} customer={getattr(record, 'customer_id', '-')} stage={getattr(record, 'stage', '-')}]"
        return line


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of that log_format ('text' or 'json')."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str, level: str | int) -> None:
    """Send this process's log lines to stderr in that format and level (replacing any
    handlers set before, such as logging.basicConfig's or dramatiq's own)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobFields())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def reformat(log_format: str) -> None:
    """Keep the root logger's handlers (dramatiq's worker processes send their lines to the
    master through them) but give them this format and the job's fields."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(formatter(log_format))
        if not any(isinstance(f, JobFields) for f in handler.filters):
            handler.addFilter(JobFields())


def gunicorn_logconfig(log_format: str, level: str) -> dict[str, Any]:
    """gunicorn's logconfig_dict: its error and access logs to stderr/stdout in this format."""
    formatter_class = "service.logs.JsonFormatter" if log_format == "json" else "service.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": formatter_class}},
        "filters": {"job": {"()": "service.logs.JobFields"}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "service", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "service", "stream": "ext://sys.stdout"},
            "root": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "filters": ["job"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
        "root": {"level": level, "handlers": ["root"]},
    }


def wrap_line(line: str) -> str:
    """A line another program wrote (dramatiq's master), as a JSON log line unless it is one."""
    text = line.rstrip("\n")
    if text.startswith("{") and text.endswith("}"):
        try:
            json.loads(text)
            return text
        except ValueError:
            pass
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    entry: dict[str, Any] = {"time": now, "level": "info", "logger": "dramatiq", "message": text}
    parsed = _DRAMATIQ_LINE.match(text)
    if parsed:  # [time] [PID n] [thread] [logger] [LEVEL] message
        entry.update(level=parsed["level"].lower(), logger=parsed["logger"], message=parsed["message"])
        entry["pid"] = int(parsed["pid"])
    entry["message"] = redact(entry["message"])
    return json.dumps(entry, ensure_ascii=False)


_DRAMATIQ_LINE = re.compile(
    r"\[[^]]*\] \[PID (?P<pid>\d+)\] \[[^]]*\] \[(?P<logger>[^]]*)\] \[(?P<level>[A-Z]+)\] (?P<message>.*)\Z", re.DOTALL
)


# A password after its key (password=, PGPASSWORD=, "password": ...), quoted (libpq's '...' with
# backslash escapes, or "...") or bare up to white space; an unclosed quote runs to the end.
# Or the password of a URI's user info (scheme://user:password@host), up to the last @ of it.
_PASSWORD = re.compile(
    r"""(?P<key>password["']?\s*[=:]\s*)(?:'(?:\\.?|[^'\\])*'?|"(?:\\.?|[^"\\])*"?|[^\s'"]\S*)"""
    r"|(?P<user>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^\s/?#]*(?=@)",
    re.IGNORECASE | re.DOTALL,
)


def redact(text: str) -> str:
    """Remove passwords from a DSN, a URI or a driver message before it reaches a log or a user."""
    return _PASSWORD.sub(lambda m: f"{m.group('key') or m.group('user')}***", text)


def describe(exc: BaseException) -> str:
    """A one-line, password-free description of a driver error (for the operator's log)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # libpq says one line per address it tried (localhost: ::1, then 127.0.0.1): keep them all.
    tried = [line for line in lines[1:] if line.startswith("connection to server")]
    return redact(" / ".join([lines[0], *tried]))
