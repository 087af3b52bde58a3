"""Shared fixtures: a real Postgres server, and fresh databases cloned per test module.

The server is TEST_DATABASE_URL if set, else a local server on 127.0.0.1:5432 if one
answers, else the embedded pgserver under .data/test-pg.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _reachable(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A DSN to a maintenance database of a real Postgres server the tests may create databases on."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return explicit
    if _reachable(LOCAL_DSN):
        return LOCAL_DSN
    from service.storage.db import embedded_dsn

    return embedded_dsn(ROOT / ".data" / "test")


class Databases:
    """Creates throw-away databases on the test server and drops them at the end."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    def dsn(self, name: str) -> str:
        params = psycopg2.extensions.parse_dsn(self.admin_dsn)
        params["dbname"] = name
        return psycopg2.extensions.make_dsn(**params)

    def create(self, prefix: str = "t") -> str:
        name = f"importsvc_{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.dsn(name)

    def drop(self, dsn: str) -> None:
        """Drop one database now (connections to it are cut)."""
        name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_all(self) -> None:
        for name in self.created:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()

    def _admin(self, statement: sql.Composable) -> None:
        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def databases(pg_admin_dsn: str) -> Iterator[Databases]:
    """Fresh databases for one test module, dropped afterwards."""
    dbs = Databases(pg_admin_dsn)
    yield dbs
    dbs.drop_all()


def query(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on a database and return its rows (test helper)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def until(condition: Callable[[], object], timeout: float = 60, interval: float = 0.01) -> None:
    """Poll until condition() is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition never became true within {timeout} s")


def wait_finished(jobs: Any, job_id: str, timeout: float) -> Any:
    """Poll a JobStore until the job reaches a final status; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job is not None and job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {jobs.get(job_id)}")


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering with handler: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
