"""Connections and transactions on one customer's database, and the one place its driver
errors are wrapped (used by service.storage.store, which runs the statements).

A wrapped error's text is what a customer may read (job errors, job log lines, API answers):
it never names the database's host, port or user, nor its DSN (SPEC 14). The driver's own
words, passwords removed, are the error's `detail` and go to this process's log.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from service.errors import CustomerDBRefused, CustomerDBUnavailable, JobCancelled
from service.logs import describe, redact
from service.storage.db import IdleConnections, connect, database_name

log = logging.getLogger(__name__)

IDLE = IdleConnections(per_dsn=2, total=8)  # customer DBs: a few idle per process
WATCH_SECONDS = 0.5  # how often a publish checks that its job was not cancelled

UNREACHABLE = "customer database unreachable"
DROPPED = "customer database unreachable: the connection dropped"
REFUSED = "customer database refused the import"

# What may name the server in a refusal's message: an IPv4 address, "port N", "host=...".
_SERVER_WORDS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\bport \d+|\b(?:host|hostaddr|port|user|dbname)\s*=\s*\S+", re.IGNORECASE
)


def refusal_reason(exc: psycopg2.Error, dsn: str) -> str:
    """What a customer may read of a refusal: the server's primary message with no connection
    detail in it (host, port, user, password, database name), and its SQLSTATE."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or ""
    if not primary and not exc.pgcode:  # a client-side error: its own first line
        primary = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = redact(primary)
    params = psycopg2.extensions.parse_dsn(dsn)
    for name in ("password", "user", "host", "hostaddr", "dbname"):
        for value in str(params.get(name, "")).split(","):  # (libpq takes lists of hosts)
            if len(value) >= 2:
                text = text.replace(value, "***")
    port = str(params.get("port", ""))
    if port:
        text = re.sub(rf"(?<=:){re.escape(port)}\b", "***", text)
    text = _SERVER_WORDS.sub("***", text).strip()
    code = f"SQLSTATE {exc.pgcode}" if exc.pgcode else ""
    return f"{text} ({code})" if text and code else text or code or type(exc).__name__


class CustomerDB:
    """Connections to one customer's database: reused while idle, wrapped errors, cancellable transactions."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _connect(self) -> Any:
        """An idle connection of this process or a new one; an unreachable database becomes
        CustomerDBUnavailable."""
        conn = IDLE.take(self._dsn)
        if conn is not None:
            return conn
        try:
            return connect(self._dsn)
        except psycopg2.OperationalError as exc:
            raise self._unavailable(UNREACHABLE, f"is unreachable: {describe(exc)}") from None

    def _failed(self, exc: Exception) -> CustomerDBUnavailable:
        """A dropped connection or a failing server, as the retryable error jobs wait on."""
        return self._unavailable(DROPPED, f"failed: {describe(exc)}")

    def _unavailable(self, public: str, detail: str) -> CustomerDBUnavailable:
        """The retryable error, its detail (the database's name, the driver's words) logged here."""
        detail = f"customer database {database_name(self._dsn)!r} {detail}"
        log.warning("%s", detail)
        return CustomerDBUnavailable(public, detail)

    def _refused(self, exc: psycopg2.Error) -> CustomerDBRefused:
        """A statement the database refused: a reason without connection details for the customer."""
        detail = f"customer database {database_name(self._dsn)!r} refused the import: {describe(exc)}"
        log.warning("%s", detail)
        return CustomerDBRefused(f"{REFUSED}: {refusal_reason(exc, self._dsn)}", detail)

    @contextmanager
    def driver_errors(self) -> Iterator[None]:
        """Driver errors as the service's: a dropped connection is retryable (CustomerDBUnavailable);
        a database that answered but refused (a table of another shape, no permission...) is the
        customer's to fix, and retrying will not help (CustomerDBRefused)."""
        try:
            yield
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise self._failed(exc) from None
        except psycopg2.Error as exc:
            raise self._refused(exc) from None

    @contextmanager
    def _transaction(self, still_running: Callable[[], bool] | None = None) -> Iterator[Any]:
        """A transaction on a fresh connection; connection trouble becomes CustomerDBUnavailable.

        With `still_running`, a watcher cancels the statement in progress once it says False,
        and the transaction ends in JobCancelled.
        """
        conn = self._connect()
        cancelled = threading.Event()
        done = threading.Event()
        watcher = None
        if still_running is not None:
            watcher = threading.Thread(target=_watch, args=(conn, still_running, cancelled, done), daemon=True)
            watcher.start()
        clean = False
        try:
            with self.driver_errors():
                try:
                    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                        yield Cursor(cur, cancelled)
                    clean = True
                except psycopg2.errors.QueryCanceled:
                    if cancelled.is_set():
                        raise JobCancelled("the job was cancelled") from None
                    raise self._unavailable(
                        "customer database cancelled a statement", "cancelled a statement"
                    ) from None
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
            if clean and not cancelled.is_set():  # a late cancel must not hit the next user
                IDLE.give(self._dsn, conn)
            else:
                conn.close()


def exists(cur: Any, relation: str) -> bool:
    """Whether a table (schema-qualified, or on the search path) exists."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (relation,))
    return bool(cur.fetchone()["present"])


class Cursor:
    """A cursor that refuses to run more statements once its job was cancelled."""

    def __init__(self, cur: Any, cancelled: threading.Event) -> None:
        self._cur = cur
        self._cancelled = cancelled

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the watcher saw the job cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled("the job was cancelled")

    def execute(self, statement: Any, params: Any = None) -> None:
        """Run a statement, unless the job was cancelled."""
        self.check_cancelled()
        self._cur.execute(statement, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def _watch(conn: Any, still_running: Callable[[], bool], cancelled: threading.Event, done: threading.Event) -> None:
    """Cancel the connection's statement once the job is no longer running."""
    while not done.wait(WATCH_SECONDS):
        try:
            running = still_running()
        except Exception as exc:  # the app DB hiccuped: keep going, ask again
            log.warning("could not check whether a job is still running: %s", describe(exc))
            continue
        if not running:
            cancelled.set()
            conn.cancel()
            return
