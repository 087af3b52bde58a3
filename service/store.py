"""The only module that writes customer databases.

Each chunk's valid rows are COPYed straight into the product table, in one transaction
that first deletes whatever an earlier attempt at the same rows committed, so a
redelivered chunk never duplicates a row (`UNIQUE (job_id, source_row)` backs that up).
A failed job's rows are deleted by job id. (A staging table published in one statement
at the end was measured: the publish alone cost as much as a plain COPY, serially, which
put the 0.5x-of-COPY target out of reach; see the README.)
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

from service.db import connect, database_name, describe
from service.errors import CustomerDBRefused, CustomerDBUnavailable
from service.products import PRODUCT_NAME

log = logging.getLogger(__name__)

PRODUCT_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    data        jsonb NOT NULL,
    job_id      uuid NOT NULL,
    source_row  integer NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, source_row)
)
"""


def product_table(product: str) -> sql.Identifier:
    """The identifier of a product's table; only registry-shaped names are accepted."""
    if not PRODUCT_NAME.match(product):
        raise ValueError(f"not a product name: {product!r}")
    return sql.Identifier(product)


class CustomerStore:
    """One customer's database: product tables, chunk inserts, counts and deletes."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A transaction on a fresh connection; connection trouble becomes CustomerDBUnavailable."""
        try:
            conn = connect(self._dsn)
        except psycopg2.OperationalError as exc:
            raise CustomerDBUnavailable(
                f"customer database {database_name(self._dsn)!r} is unreachable: {describe(exc)}"
            ) from None
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise CustomerDBUnavailable(
                f"customer database {database_name(self._dsn)!r} failed: {describe(exc)}"
            ) from None
        except psycopg2.Error as exc:
            # The database answered but refused (a table of another shape, no permission...):
            # retrying will not help, the customer must act.
            raise CustomerDBRefused(
                f"customer database {database_name(self._dsn)!r} refused the import: {describe(exc)}"
            ) from None
        finally:
            conn.close()

    def prepare(self, product: str) -> None:
        """Create the product table when it is missing."""
        with self._transaction() as cur:
            # Concurrent first imports would race on CREATE ... IF NOT EXISTS (it is not atomic).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('import-service:ddl'))")
            cur.execute(sql.SQL(PRODUCT_TABLE).format(table=product_table(product)))

    def copy_chunk(
        self, job_id: str, product: str, first_row: int, last_row: int, copy_text: io.StringIO, rerun: bool
    ) -> None:
        """COPY one chunk's rows (`job_id<TAB>source_row<TAB>json` lines); a rerun first deletes what it left."""
        table = product_table(product)
        with self._transaction() as cur:
            if rerun:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE job_id = %s AND source_row BETWEEN %s AND %s").format(table),
                    (job_id, first_row, last_row),
                )
            copy_text.seek(0)
            cur.copy_expert(sql.SQL("COPY {} (job_id, source_row, data) FROM STDIN").format(table), copy_text)

    def count_rows(self, job_id: str, product: str) -> int:
        """How many rows of the job the product table holds."""
        with self._transaction() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE job_id = %s").format(product_table(product)), (job_id,))
            return int(cur.fetchone()[0])

    def discard(self, job_id: str, product: str) -> int:
        """Delete every row of the job; return how many."""
        with self._transaction() as cur:
            cur.execute("SELECT to_regclass(%s)", (product,))
            if cur.fetchone()[0] is None:
                return 0
            cur.execute(sql.SQL("DELETE FROM {} WHERE job_id = %s").format(product_table(product)), (job_id,))
            return int(cur.rowcount)
