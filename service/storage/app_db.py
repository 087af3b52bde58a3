"""The base of the app DB's store: its named queries, kept connections, one transaction at a
time, and the queue messages and log lines written inside one.

A state change that causes more work writes its queue message on the same cursor, in the
same transaction (see `Dispatch`), so state and work never disagree. The parts of `JobStore`
(service.storage.jobs) build on `AppDB`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

from service.storage.db import IdleConnections, connect, load_queries
from service.storage.job import Job
from service.storage.queue import Encoded, delivery_message

SQL_DIR = Path(__file__).parent / "sql"

# (actor name, args) -> (queue name, message id, encoded message): provided by actors/.
Dispatch = Callable[[str, tuple[Any, ...]], tuple[str, str, dict[str, Any]]]
Send = tuple[str, tuple[Any, ...]]

# Every column a Job carries but its plan: views, lists and watchers never load a header
# of up to max_columns names; the stages that read the file do (see `JobStore.plan`). Of the
# plan they load only its small `format` object, for the job's source (views.job_source).
_EXPRESSIONS = {"plan_format": "plan->'format' AS plan_format"}
JOB_COLUMNS = ", ".join(_EXPRESSIONS.get(name, name) for name in Job.__dataclass_fields__ if name != "plan")
Q = {name: text.replace("{job_columns}", JOB_COLUMNS) for name, text in load_queries(SQL_DIR / "queries.sql").items()}


def is_uuid(text: Any) -> bool:
    """Whether text is an id as this service makes them (a UUID in its 36-character form):
    anything else names no row, and is never sent to Postgres (which would refuse it)."""
    if not isinstance(text, str) or len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class AppDB:
    """The app DB over a small thread-safe connection pool, and the queue messages it writes."""

    def __init__(self, dsn: str, dispatch: Dispatch | None = None, maxconn: int = 8) -> None:
        self._dsn = dsn
        self._dispatch = dispatch
        self._idle = IdleConnections(per_dsn=maxconn, total=maxconn)

    @property
    def dsn(self) -> str:
        """The app DB's DSN."""
        return self._dsn

    def close(self) -> None:
        """Close every idle connection."""
        self._idle.close_all()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """One transaction on a kept connection (up to maxconn stay open idle); a broken
        connection is discarded, not reused."""
        conn = self._idle.take(self._dsn) or connect(self._dsn)
        broken = False
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            if broken:
                conn.close()
            else:
                self._idle.give(self._dsn, conn)

    def _send(self, cur: Any, sends: Iterable[Send]) -> None:
        """Write queue messages on this cursor (they commit with the transaction)."""
        for actor_name, args in sends:
            if self._dispatch is None:
                raise RuntimeError("this JobStore was built without a dispatcher and cannot send work")
            enqueue(cur, self._dispatch(actor_name, args))

    def _send_webhook(self, cur: Any, job_id: str, status: str) -> None:
        """Queue the job's webhook for its final status, if it has a callback_url (SPEC 16).

        Every transaction that sets a final status calls this, so the delivery commits or
        rolls back with the status it reports."""
        cur.execute(Q["callback_url"], (job_id,))
        row = cur.fetchone()
        if row is not None and row["callback_url"]:
            enqueue(cur, delivery_message(job_id, status))


def enqueue(cur: Any, encoded: Encoded) -> None:
    """Write one encoded queue message on this cursor (it commits with the transaction)."""
    queue, message_id, message = encoded
    cur.execute(
        Q["enqueue_message"],
        {"queue": queue, "message_id": message_id, "message": psycopg2.extras.Json(message)},
    )


def insert_logs(cur: Any, job_id: str, lines: Sequence[tuple[str, int | None, str | None, str]]) -> None:
    """Insert several log lines in one statement."""
    if lines:
        rows = [(job_id, level, row, field, message) for level, row, field, message in lines]
        psycopg2.extras.execute_values(cur, Q["insert_log"], rows)
