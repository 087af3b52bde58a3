"""The only module that writes customer databases (statements in sql/customer.sql).

Two ways rows land in a product table:
- streaming append: each chunk COPYs its valid rows straight into the table, in one
  transaction that first deletes what an earlier attempt at the same rows committed, so a
  redelivered chunk never duplicates a row (`UNIQUE (job_id, source_row)` backs that up);
- atomic jobs (upsert, replace, `atomic: true` append): chunks COPY into the job's own
  staging table the same way, and `publish` moves the staged rows into the product table in
  one transaction, which also records the job in `import_service.publishes` (so a rerun
  publishes once) and keeps the previous version of every row it changes for undo.
A failed or cancelled job's rows and staging table are deleted by job id.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from service.config import PROJECT_ROOT
from service.db import IdleConnections, connect, database_name, describe, load_queries
from service.errors import CustomerDBRefused, CustomerDBUnavailable, JobCancelled, JobConflict, JobFailed
from service.jobs import Counts
from service.products import PRODUCT_NAME
from service.rejects import Reject

log = logging.getLogger(__name__)

Q = load_queries(PROJECT_ROOT / "service" / "sql" / "customer.sql")


_IDLE = IdleConnections(per_dsn=2, total=8)  # customer DBs: a few idle per process
WATCH_SECONDS = 0.5  # how often a publish checks that its job was not cancelled
MAX_KEYS_NAMED = 10


def product_table(product: str) -> sql.Identifier:
    """The identifier of a product's table; only registry-shaped names are accepted."""
    if not PRODUCT_NAME.match(product):
        raise ValueError(f"not a product name: {product!r}")
    return sql.Identifier(product)


def stage_name(job_id: str) -> str:
    """The staging table's name of an atomic job (made from the job's UUID only)."""
    return f"stage_{uuid.UUID(job_id).hex}"


def stage_table(job_id: str) -> sql.Identifier:
    """The staging table of an atomic job."""
    return sql.Identifier("import_service", stage_name(job_id))


def _q(name: str, product: str | None = None, key: str | None = None, job_id: str | None = None) -> sql.Composed:
    """A named statement with its table, staging table and key filled in."""
    parts: dict[str, sql.Composable] = {}
    if product is not None:
        parts["table"] = product_table(product)
        parts["index"] = sql.Identifier(f"{product}_import_key")
    if key is not None:
        parts["key"] = sql.Literal(key)
    if job_id is not None:
        parts["stage"] = stage_table(job_id)
    return sql.SQL(Q[name]).format(**parts)


@dataclass(frozen=True)
class Publication:
    """What a publish did: its counts, and the duplicate-key warnings (row, message) to log."""

    counts: Counts
    warnings: list[tuple[int, str]] = field(default_factory=list)
    already: bool = False


@dataclass(frozen=True)
class Undone:
    """What an undo did to the product table."""

    restored: int = 0
    removed: int = 0
    revived: int = 0
    already: bool = False


def _counts(row: dict[str, Any]) -> Counts:
    return Counts(
        row["rows_inserted"], row["rows_updated"], row["rows_unchanged"], row["rows_duplicate"], row["rows_deleted"]
    )


class CustomerStore:
    """One customer's database: product tables, staging, publish, undo, deletes."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def has_rejects(self, job_id: str) -> bool:
        """Whether any rejected row of the job is stored."""
        with self._transaction() as cur:
            if not _exists(cur, "import_service.rejects"):
                return False
            cur.execute("SELECT EXISTS (SELECT 1 FROM import_service.rejects WHERE job_id = %s) AS found", (job_id,))
            return bool(cur.fetchone()["found"])

    def reject_rows(self, job_id: str) -> list[int]:
        """The source rows of the job's rejects, in order."""
        with self._transaction() as cur:
            if not _exists(cur, "import_service.rejects"):
                return []
            cur.execute(
                "SELECT source_row FROM import_service.rejects WHERE job_id = %s ORDER BY source_row", (job_id,)
            )
            return [int(row["source_row"]) for row in cur.fetchall()]

    def iter_rejects(self, job_id: str, after: int = 0, limit: int | None = None) -> Iterator[Reject]:
        """The job's rejects after `after`, in source_row order, read in batches (constant memory)."""
        with self._transaction() as cur:
            if not _exists(cur, "import_service.rejects"):
                return
        conn = self._connect()
        try:
            with conn, conn.cursor(name="rejects") as cur:
                cur.itersize = 2000
                cur.execute(
                    "SELECT source_row, record::text, errors FROM import_service.rejects "
                    "WHERE job_id = %s AND source_row > %s ORDER BY source_row LIMIT %s",
                    (job_id, after, limit),
                )
                for source_row, cells, errors in cur:
                    yield Reject(source_row, json.loads(cells), errors)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise self._failed(exc) from None
        finally:
            conn.close()

    def _connect(self) -> Any:
        """An idle connection of this process or a new one; an unreachable database becomes
        CustomerDBUnavailable."""
        conn = _IDLE.take(self._dsn)
        if conn is not None:
            return conn
        try:
            return connect(self._dsn)
        except psycopg2.OperationalError as exc:
            raise CustomerDBUnavailable(
                f"customer database {database_name(self._dsn)!r} is unreachable: {describe(exc)}"
            ) from None

    def _failed(self, exc: Exception) -> CustomerDBUnavailable:
        """A dropped connection or a failing server, as the retryable error jobs wait on."""
        return CustomerDBUnavailable(f"customer database {database_name(self._dsn)!r} failed: {describe(exc)}")

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
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield _Cursor(cur, cancelled)
            clean = True
        except psycopg2.errors.QueryCanceled:
            if cancelled.is_set():
                raise JobCancelled("the job was cancelled") from None
            raise CustomerDBUnavailable(
                f"customer database {database_name(self._dsn)!r} cancelled a statement"
            ) from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise self._failed(exc) from None
        except psycopg2.Error as exc:
            # The database answered but refused (a table of another shape, no permission...):
            # retrying will not help, the customer must act.
            raise CustomerDBRefused(
                f"customer database {database_name(self._dsn)!r} refused the import: {describe(exc)}"
            ) from None
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
            if clean and not cancelled.is_set():  # a late cancel must not hit the next user
                _IDLE.give(self._dsn, conn)
            else:
                conn.close()

    def prepare(self, product: str, key: str | None = None, stage_for: str | None = None) -> None:
        """Create the product table (and its key index, the job's staging table) when missing."""
        with self._transaction() as cur:
            # Concurrent first imports would race on CREATE ... IF NOT EXISTS (it is not atomic).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('import-service:ddl'))")
            cur.execute(_q("product_table", product))
            cur.execute(Q["service_schema"])
            if key is not None:
                cur.execute(_q("key_index", product, key))
            if stage_for is not None:
                cur.execute(_q("stage_table", job_id=stage_for))

    def copy_chunk(
        self,
        job_id: str,
        product: str,
        first_row: int,
        last_row: int,
        copy_text: io.BytesIO | None,
        staged: bool,
        rerun: bool,
        rejects: io.BytesIO | None = None,
    ) -> None:
        """COPY one chunk's valid rows into the staging table (`source_row<TAB>json` lines) or
        the product table (`job_id<TAB>source_row<TAB>json`, see `copy_prefix`), and its
        invalid ones into the rejects (`job_id<TAB>source_row<TAB>record<TAB>errors`), at once.

        A rerun first deletes what an earlier attempt at the same rows left. Nothing is
        written once the job's rows were discarded (see `discard`)."""
        with self._transaction() as cur:
            if _exists(cur, "import_service.discarded"):  # (a customer DB prepared by an older version)
                cur.execute("SELECT pg_advisory_xact_lock_shared(hashtext('import-service:job:' || %s))", (job_id,))
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM import_service.discarded WHERE job_id = %s) AS gone", (job_id,)
                )
                if cur.fetchone()["gone"]:
                    return
            if rejects is not None:
                if rerun:
                    cur.execute(
                        "DELETE FROM import_service.rejects WHERE job_id = %s AND source_row BETWEEN %s AND %s",
                        (job_id, first_row, last_row),
                    )
                rejects.seek(0)
                cur.copy_expert("COPY import_service.rejects (job_id, source_row, record, errors) FROM STDIN", rejects)
            if copy_text is None:
                return
            if staged:
                target: sql.Composable = stage_table(job_id)
                where = sql.SQL("source_row BETWEEN %s AND %s")
                params: tuple[Any, ...] = (first_row, last_row)
                copy = sql.SQL("COPY {} (source_row, data) FROM STDIN")
            else:
                target = product_table(product)
                where = sql.SQL("job_id = %s AND source_row BETWEEN %s AND %s")
                params = (job_id, first_row, last_row)
                copy = sql.SQL("COPY {} (job_id, source_row, data) FROM STDIN")
            if rerun:
                cur.execute(sql.SQL("DELETE FROM {} WHERE ").format(target) + where, params)
            copy_text.seek(0)
            cur.copy_expert(copy.format(target), copy_text)

    @staticmethod
    def copy_prefix(job_id: str, staged: bool) -> str:
        """What starts each COPY line of a chunk, before `source_row<TAB>json`."""
        return "" if staged else f"{job_id}\t"

    def save_chunk_cells(self, job_id: str, chunk_no: int, cells: bytes) -> None:
        """Store a chunk's cells (see formats.xlsx.encode_records); a rerun replaces them."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO import_service.chunk_cells (job_id, chunk_no, cells) VALUES (%s, %s, %s) "
                "ON CONFLICT (job_id, chunk_no) DO UPDATE SET cells = EXCLUDED.cells, stored_at = now()",
                (job_id, chunk_no, cells),
            )

    def chunk_cells(self, job_id: str, chunk_no: int) -> bytes | None:
        """A chunk's stored cells, None when they are gone."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT cells FROM import_service.chunk_cells WHERE job_id = %s AND chunk_no = %s", (job_id, chunk_no)
            )
            row = cur.fetchone()
            return None if row is None else bytes(row["cells"])

    def drop_chunk_cells(self, job_id: str) -> None:
        """Delete a job's stored chunk cells (a dry run's end; other ends do it in their own transaction)."""
        with self._transaction() as cur:
            _drop_chunk_cells(cur, job_id)

    def journal_append(self, job_id: str, product: str, expected: int) -> int:
        """Count the rows of a streaming append job that ended and, when they are the `expected`
        number, journal it (so that it can be undone), in one transaction; the count."""
        with self._transaction() as cur:
            cur.execute(
                sql.SQL("SELECT count(*) AS n FROM {} WHERE job_id = %s").format(product_table(product)), (job_id,)
            )
            inserted = int(cur.fetchone()["n"])
            if inserted == expected:
                params = {"job": job_id, "product": product, "mode": "append", **Counts(inserted=inserted).as_params()}
                cur.execute(Q["journal_insert"], params)
                _drop_chunk_cells(cur, job_id)
            return inserted

    def journal(self, job_id: str) -> Publication | None:
        """What the job published, if it did."""
        with self._transaction() as cur:
            if not _exists(cur, "import_service.publishes"):
                return None
            cur.execute(Q["journal"], {"job": job_id})
            row = cur.fetchone()
        return Publication(_counts(row), already=True) if row else None

    def publish(
        self,
        job_id: str,
        product: str,
        mode: str,
        key: str | None,
        expected_rows: int,
        max_warnings: int,
        still_running: Callable[[], bool],
        confirm: Callable[[], bool],
    ) -> Publication:
        """Move the job's staged rows into the product table in one transaction (SPEC 12).

        `confirm` is asked last, just before the commit; when it (or `still_running`, asked
        while statements run) says the job was cancelled, nothing changes: JobCancelled.
        """
        with self._transaction(still_running) as cur:
            cur.execute(Q["publish_lock"], {"product": product})
            cur.execute(Q["journal"], {"job": job_id})
            row = cur.fetchone()
            if row is not None:
                return Publication(_counts(row), already=True)
            if not _exists(cur, f"import_service.{stage_name(job_id)}"):
                raise JobFailed("the job's staged rows are gone from the customer database; enqueue it again")
            cur.execute(_q("stage_count", job_id=job_id))
            staged = int(cur.fetchone()["count"])
            if staged != expected_rows:
                raise JobFailed(f"{staged} rows were staged but {expected_rows} were valid; enqueue the file again")
            if mode == "append":
                cur.execute(_q("publish_append", product, job_id=job_id), {"job": job_id})
                publication = Publication(Counts(inserted=cur.rowcount))
            else:
                assert key is not None, "upsert and replace need the product's x-key"
                publication = self._merge(cur, job_id, product, mode, key, staged, max_warnings)
            params = {"job": job_id, "product": product, "mode": mode, **publication.counts.as_params()}
            cur.execute(Q["journal_insert"], params)
            # CASCADE: the temporary view of the file's rows depends on it.
            cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(stage_table(job_id)))
            _drop_chunk_cells(cur, job_id)
            cur.check_cancelled()
            if not confirm():
                raise JobCancelled("the job was cancelled")
        return publication

    def _merge(
        self, cur: _Cursor, job_id: str, product: str, mode: str, key: str, staged: int, max_warnings: int
    ) -> Publication:
        """Upsert (and for replace, delete the rest of) the staged rows by key, keeping history."""
        cur.execute(_q("distinct_keys", key=key, job_id=job_id))
        distinct = int(cur.fetchone()["n"])
        cur.execute(_q("all_rows" if distinct == staged else "latest_by_key", key=key, job_id=job_id))
        warnings: list[tuple[int, str]] = []
        if distinct < staged and max_warnings > 0:
            cur.execute(_q("duplicates", key=key, job_id=job_id), {"limit": max_warnings})
            for row in cur.fetchall():
                text = f"duplicate key {row['k']!r}: row {row['winner']} has the same key and wins"
                warnings.append((row["source_row"], text))
        cur.execute(_q("match_keys", product, key))
        matched = cur.rowcount
        cur.execute(Q["analyze_match"])
        cur.execute(_q("keys_held_twice"))
        twice = [row["k"] for row in cur.fetchall()]
        if twice:
            named = ", ".join(repr(k) for k in twice[:MAX_KEYS_NAMED])
            raise JobFailed(
                f"the {product} table already holds these keys ({key}) more than once, so {mode} cannot tell "
                f"which row to change: {named}; remove the extra rows (or undo the append job that added them)"
            )
        cur.execute(_q("upsert_update", product, key), {"job": job_id})
        updated = cur.rowcount
        inserted = 0
        if matched < distinct:  # (no key matched twice, checked above) some keys are new
            cur.execute(_q("upsert_insert", product, key), {"job": job_id})
            inserted = cur.rowcount
        deleted = 0
        if mode == "replace":
            cur.execute(_q("replace_delete", product, key), {"job": job_id})
            deleted = cur.rowcount
        counts = Counts(inserted, updated, distinct - updated - inserted, staged - distinct, deleted)
        return Publication(counts, warnings)

    def undo(self, job_id: str, product: str, key: str | None, retention_days: int, check_only: bool = False) -> Undone:
        """Put back the product table as it was before the job, in one transaction (SPEC 13).

        Raises JobConflict when later jobs changed the same rows, or no history is kept;
        `check_only` stops after those checks."""
        with self._transaction() as cur:
            cur.execute(Q["service_schema"])
            cur.execute(Q["publish_lock"], {"product": product})
            cur.execute(Q["journal"], {"job": job_id})
            row = cur.fetchone()
            if row is None:
                raise JobConflict(
                    f"job {job_id} cannot be undone: the customer database keeps no history of it "
                    f"(kept for undo_retention_days = {retention_days})"
                )
            if row["undone_at"] is not None:
                return Undone(already=True)
            cur.execute("SELECT %s < now() - make_interval(days => %s) AS old", (row["published_at"], retention_days))
            if cur.fetchone()["old"]:
                raise JobConflict(
                    f"job {job_id} cannot be undone: it is older than undo_retention_days ({retention_days})"
                )
            if key is not None:
                cur.execute(_q("undo_conflicts", product, key), {"job": job_id})
                later = [str(r["job_id"]) for r in cur.fetchall()]
                if later:
                    raise JobConflict(
                        f"job {job_id} cannot be undone: later job(s) changed the same rows; "
                        f"undo them first, newest first: {', '.join(later)}"
                    )
            if check_only:
                return Undone()
            cur.execute(_q("undo_updates", product), {"job": job_id})
            restored = cur.rowcount
            cur.execute(_q("undo_inserts", product), {"job": job_id})
            removed = cur.rowcount
            cur.execute(_q("undo_deletes", product), {"job": job_id})
            revived = cur.rowcount
            cur.execute(Q["undo_done"], {"job": job_id})
        return Undone(restored, removed, revived)

    def discard(self, job_id: str, product: str, atomic: bool) -> int:
        """Delete what a failed or cancelled job left: its staging table, or its streamed rows.

        An atomic job's rows reach the product table only through its journaled publish,
        which the caller has checked did not happen; so only the staging table goes. The job
        is marked discarded under its lock, so that no chunk COPY commits rows after this."""
        with self._transaction() as cur:
            if _exists(cur, "import_service.discarded"):
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('import-service:job:' || %s))", (job_id,))
                cur.execute(
                    "INSERT INTO import_service.discarded (job_id) VALUES (%s) ON CONFLICT DO NOTHING", (job_id,)
                )
            _drop_chunk_cells(cur, job_id)
            if atomic:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage_table(job_id)))
                return 0
            if not _exists(cur, product):
                return 0
            cur.execute(sql.SQL("DELETE FROM {} WHERE job_id = %s").format(product_table(product)), (job_id,))
            deleted = int(cur.rowcount)
            if _exists(cur, "import_service.publishes"):
                cur.execute("DELETE FROM import_service.publishes WHERE job_id = %s", (job_id,))
            return deleted

    def purge_history(self, retention_days: int) -> None:
        """Delete undo history older than the retention period."""
        with self._transaction() as cur:
            if _exists(cur, "import_service.publishes"):
                cur.execute(Q["purge_history"], {"days": retention_days})


def _drop_chunk_cells(cur: Any, job_id: str) -> None:
    """Delete a job's stored chunk cells, if the customer DB has the table."""
    if _exists(cur, "import_service.chunk_cells"):
        cur.execute("DELETE FROM import_service.chunk_cells WHERE job_id = %s", (job_id,))


def _exists(cur: Any, relation: str) -> bool:
    """Whether a table (schema-qualified, or on the search path) exists."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (relation,))
    return bool(cur.fetchone()["present"])


class _Cursor:
    """A cursor that refuses to run more statements once its job was cancelled."""

    def __init__(self, cur: Any, cancelled: threading.Event) -> None:
        self._cur = cur
        self._cancelled = cancelled

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the watcher saw the job cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled("the job was cancelled")

    def execute(self, statement: Any, params: Any = None) -> None:
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
