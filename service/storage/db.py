"""Where the databases are: the app DB (configured or embedded) and each customer's DB.

This module only finds and opens connections; the app-DB store (jobs.py and its parts app_db, turns, chunks, controls) and store.py run the SQL.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from service.config import Config
from service.errors import ConfigError, RequestRefused

log = logging.getLogger(__name__)

# Connection settings a customer DSN inherits from the app DB when it leaves them out,
# so that customer_map.json can say "dbname=acme" and work on any server.
_INHERITED = ("host", "port", "user", "password")


def load_queries(path: Path) -> dict[str, str]:
    """Split a .sql file into blocks headed `-- name: x` (the app-DB store and store.py run them)."""
    blocks = re.split(r"^-- name: (\w+)\s*$", path.read_text(), flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}


def app_dsn(config: Config) -> str:
    """The app DB's DSN: the configured one, else an embedded server under data_dir."""
    if config.app_db_dsn:
        return config.app_db_dsn
    return embedded_dsn(config.data_dir)


def embedded_dsn(data_dir: Path) -> str:
    """Start (or find running) the embedded Postgres under data_dir/pg and return its DSN."""
    # Imported late: processes with a configured DSN never need the package.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:  # a runtime-only install (the Docker image) has no embedded Postgres
            raise ConfigError(
                "no app_db_dsn is configured (APP_DB_DSN), and the embedded Postgres (the pgserver "
                "package, a development dependency) is not installed"
            ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode=None: the server outlives this process, so workers, servers and
        # the CLI share one instance; `make stop-db` stops it.
        server = pgserver.get_server(data_dir / "pg", cleanup_mode=None)
    except Exception as exc:  # pgserver raises assorted errors; one clear line is better
        raise ConfigError(f"{data_dir / 'pg'}: cannot start the embedded Postgres ({exc})") from None
    return server.get_uri()


def customer_dsn(config: Config, customer_id: str, app: str) -> str:
    """The DSN of a customer's DB; host, port and user default to the app DB's."""
    try:
        own = config.customers[customer_id]
    except KeyError:
        raise RequestRefused(f"unknown customer {customer_id!r}", field="customer_id") from None
    mine = psycopg2.extensions.parse_dsn(own)
    base = psycopg2.extensions.parse_dsn(app)
    for key in _INHERITED:
        if key not in mine and key in base:
            mine[key] = base[key]
    return psycopg2.extensions.make_dsn(**mine)


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "import-service"
) -> psycopg2.extensions.connection:
    """Open a connection with keepalives, so a vanished server is noticed within seconds."""
    conn = psycopg2.connect(
        dsn,
        application_name=application_name,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
    )
    conn.autocommit = autocommit
    return conn


def database_name(dsn: str) -> str:
    """The database name a DSN points at (for messages)."""
    return psycopg2.extensions.parse_dsn(dsn).get("dbname", "?")


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded Postgres under data_dir/pg if it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import
    if (data_dir / "pg" / "postmaster.pid").exists():
        pg_ctl(["-w", "stop"], pgdata=data_dir / "pg", user="pgserver" if _is_root() else None)


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_database(dsn: str) -> bool:
    """Create the database a DSN names when it is missing (for the sample customers); True if created."""
    params = psycopg2.extensions.parse_dsn(dsn)
    name = params.get("dbname")
    if not name:
        return False
    admin = psycopg2.extensions.make_dsn(**{**params, "dbname": "postgres"})
    conn = connect(admin, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            from psycopg2 import sql

            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


class IdleConnections:
    """Connections kept open between transactions, per DSN (a thread-safe idle list).

    A new connection costs a server process (2-15 ms here) and a small job runs about 15
    transactions. A connection idle for a while is checked with one round trip before reuse
    (after a server restart its socket is dead), one idle past `max_age` is closed. Only a
    connection whose transaction ended (committed or rolled back) comes back; a forked
    child starts empty."""

    def __init__(self, per_dsn: int = 4, total: int = 32, max_age: float = 60.0, check_after: float = 1.0) -> None:
        self.per_dsn, self.total, self.max_age, self.check_after = per_dsn, total, max_age, check_after
        self._idle: dict[str, list[tuple[Any, float]]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, dsn: str) -> Any | None:
        """An open connection to dsn, or None."""
        while True:
            with self._lock:
                self._after_fork()
                idle = self._idle.get(dsn)
                if not idle:
                    return None
                conn, since = idle.pop()
            age = time.monotonic() - since
            if conn.closed or age > self.max_age or (age > self.check_after and not _alive(conn)):
                conn.close()
                continue
            return conn

    def give(self, dsn: str, conn: Any) -> None:
        """Keep a connection whose transaction ended cleanly, or close it when there is no room."""
        if conn.closed or conn.status != psycopg2.extensions.STATUS_READY:
            conn.close()
            return
        now = time.monotonic()
        stale: list[Any] = []
        with self._lock:
            self._after_fork()
            for key, kept in list(self._idle.items()):  # idle too long: a server slot for nothing
                stale += [old for old, since in kept if now - since > self.max_age]
                kept[:] = [(old, since) for old, since in kept if now - since <= self.max_age]
                if not kept:
                    del self._idle[key]
            idle = self._idle.setdefault(dsn, [])
            if len(idle) < self.per_dsn and sum(len(v) for v in self._idle.values()) < self.total:
                idle.append((conn, now))
                conn = None
        for old in stale:
            old.close()
        if conn is not None:
            conn.close()

    def close_all(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                conn.close()

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:  # the parent's sockets are not ours to use
            self._idle, self._pid = {}, os.getpid()


def _alive(conn: Any) -> bool:
    """One round trip: the server is still there (after a restart, the old socket is dead)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.rollback()
        return True
    except psycopg2.Error:
        return False
