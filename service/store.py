"""The only module that writes customer databases.

Valid rows of each chunk are COPYed into an unlogged staging table of the job; the job's
insert stage publishes them into the product table with one INSERT ... SELECT. So a
failed job never leaves rows, and a redelivered chunk or publish never duplicates any.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

from service.db import connect, database_name, describe
from service.errors import CustomerDBUnavailable, JobFailed
from service.products import PRODUCT_NAME

log = logging.getLogger(__name__)

STAGING_SCHEMA = "import_staging"

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


def staging_table(job_id: str) -> sql.Composed:
    """The identifier of a job's staging table (derived from its UUID, never from input)."""
    name = "job_" + uuid.UUID(job_id).hex
    return sql.SQL("{}.{}").format(sql.Identifier(STAGING_SCHEMA), sql.Identifier(name))


class CustomerStore:
    """One customer's database: product tables, staging and publish."""

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
        finally:
            conn.close()

    def prepare(self, job_id: str, product: str) -> None:
        """Create the product table when missing and the job's empty staging table."""
        with self._transaction() as cur:
            # Concurrent first imports would race on CREATE ... IF NOT EXISTS (it is not atomic).
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('import-service:ddl'))")
            cur.execute(sql.SQL(PRODUCT_TABLE).format(table=product_table(product)))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STAGING_SCHEMA)))
            cur.execute(
                sql.SQL(
                    "CREATE UNLOGGED TABLE IF NOT EXISTS {} (source_row integer NOT NULL, data jsonb NOT NULL)"
                ).format(staging_table(job_id))
            )

    def stage(self, job_id: str, first_row: int, last_row: int, copy_text: io.StringIO, rerun: bool) -> None:
        """COPY one chunk's valid rows (text COPY lines) into staging; a rerun first clears its range."""
        table = staging_table(job_id)
        with self._transaction() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{STAGING_SCHEMA}.job_{uuid.UUID(job_id).hex}",))
            if cur.fetchone()[0] is None:
                raise JobFailed("the job's staging table is gone (the job was cancelled or failed meanwhile)")
            if rerun:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE source_row BETWEEN %s AND %s").format(table), (first_row, last_row)
                )
            copy_text.seek(0)
            cur.copy_expert(sql.SQL("COPY {} (source_row, data) FROM STDIN").format(table), copy_text)

    def publish(self, job_id: str, product: str, expected: int) -> int:
        """Move the staged rows into the product table in one transaction; return rows of the job there."""
        table, staged = product_table(product), staging_table(job_id)
        with self._transaction() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{STAGING_SCHEMA}.job_{uuid.UUID(job_id).hex}",))
            if cur.fetchone()[0] is not None:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(staged))
                count = cur.fetchone()[0]
                if count != expected:
                    # Unlogged tables are emptied by a crash of the customer's server.
                    raise JobFailed(
                        f"staged {count} rows but validated {expected}: the customer database lost staged data (restarted?)"
                    )
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {table} (data, job_id, source_row) SELECT data, %s, source_row FROM {staged} "
                        "ORDER BY source_row ON CONFLICT (job_id, source_row) DO NOTHING"
                    ).format(table=table, staged=staged),
                    (job_id,),
                )
                cur.execute(sql.SQL("DROP TABLE {}").format(staged))
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE job_id = %s").format(table), (job_id,))
            return int(cur.fetchone()[0])

    def discard(self, job_id: str, product: str) -> None:
        """Drop the job's staging table and any rows it has in the product table."""
        with self._transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging_table(job_id)))
            cur.execute("SELECT to_regclass(%s)", (product,))
            if cur.fetchone()[0] is not None:
                cur.execute(sql.SQL("DELETE FROM {} WHERE job_id = %s").format(product_table(product)), (job_id,))

    def drop_staging(self, job_id: str) -> None:
        """Drop the job's staging table (a dry run keeps nothing)."""
        with self._transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging_table(job_id)))
