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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from service.errors import JobCancelled, JobConflict, JobFailed
from service.schema.products import PRODUCT_NAME
from service.storage.customer_db import WATCH_SECONDS as WATCH_SECONDS  # (moved there; still importable here)
from service.storage.customer_db import Cursor as _Cursor
from service.storage.customer_db import CustomerDB
from service.storage.customer_db import exists as _exists
from service.storage.db import load_queries
from service.storage.jobs import Counts
from service.storage.rejects import Reject

log = logging.getLogger(__name__)

Q = load_queries(Path(__file__).parent / "sql" / "customer.sql")
MAX_KEYS_NAMED = 10
KEPT_BATCH = 2000  # rejects read at a time when a replace looks for the keys it keeps


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
    """What a publish did: its counts, the duplicate-key warnings (row, message) to log, and
    how many table rows a replace kept because their key is on an invalid line of the file."""

    counts: Counts
    warnings: list[tuple[int, str]] = field(default_factory=list)
    already: bool = False
    kept: int = 0


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


class CustomerStore(CustomerDB):
    """One customer's database: product tables, staging, publish, undo, deletes."""

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
            with self.driver_errors(), conn, conn.cursor(name="rejects") as cur:
                cur.itersize = 2000
                cur.execute(
                    "SELECT source_row, record::text, errors FROM import_service.rejects "
                    "WHERE job_id = %s AND source_row > %s ORDER BY source_row LIMIT %s",
                    (job_id, after, limit),
                )
                for source_row, cells, errors in cur:
                    yield Reject(source_row, json.loads(cells), errors)
        finally:
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
        spare: Callable[[Any], str | None] | None = None,
    ) -> Publication:
        """Move the job's staged rows into the product table in one transaction (SPEC 12).

        `confirm` is asked last, just before the commit; when it (or `still_running`, asked
        while statements run) says the job was cancelled, nothing changes: JobCancelled.
        A replace keeps the rows whose key `spare` reads (valid) from one of the job's rejects.
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
                publication = self._merge(cur, job_id, product, mode, key, staged, max_warnings, spare)
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
        self,
        cur: _Cursor,
        job_id: str,
        product: str,
        mode: str,
        key: str,
        staged: int,
        max_warnings: int,
        spare: Callable[[Any], str | None] | None = None,
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
        deleted = kept = 0
        if mode == "replace":
            sparing = spare is not None and _keep_rejected_keys(cur, job_id, spare) > 0
            if sparing:
                cur.execute(_q("kept_count", product, key), {"job": job_id})
                kept = int(cur.fetchone()["n"])
            # (Without kept keys, the plain delete: no key to read from every row left.)
            cur.execute(_q("replace_delete_sparing" if sparing else "replace_delete", product, key), {"job": job_id})
            deleted = cur.rowcount
        counts = Counts(inserted, updated, distinct - updated - inserted, staged - distinct, deleted)
        return Publication(counts, warnings, kept=kept)

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
                        f"job {job_id} cannot be undone: later job(s) changed the same rows (or rows of "
                        f"those jobs); undo them first, newest first: {', '.join(later)}"
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


def _keep_rejected_keys(cur: _Cursor, job_id: str, spare: Callable[[Any], str | None]) -> int:
    """Fill import_kept with the valid keys `spare` reads from the job's rejects, batch by batch
    (memory does not grow with them); how many keys (with repeats)."""
    found = 0
    cur.execute(Q["kept_keys"])
    with cur.connection.cursor(name="kept_rejects") as rejected:
        rejected.itersize = KEPT_BATCH
        rejected.execute("SELECT record::text FROM import_service.rejects WHERE job_id = %s", (job_id,))
        while batch := rejected.fetchmany(KEPT_BATCH):
            cur.check_cancelled()
            # (A NUL cannot be stored in text, nor then in any key of the table.)
            keys = {k for (record,) in batch if (k := spare(json.loads(record))) is not None and "\x00" not in k}
            if keys:
                psycopg2.extras.execute_values(cur, Q["kept_insert"], [(k,) for k in keys], page_size=KEPT_BATCH)
                found += len(keys)
    if found:
        cur.execute(Q["analyze_kept"])
    return found


def _drop_chunk_cells(cur: Any, job_id: str) -> None:
    """Delete a job's stored chunk cells, if the customer DB has the table."""
    if _exists(cur, "import_service.chunk_cells"):
        cur.execute("DELETE FROM import_service.chunk_cells WHERE job_id = %s", (job_id,))
