"""Uploads in the app DB (SPEC 19): who an upload belongs to, its length, how many of its bytes
are stored, and where the whole file is once they all are. The bytes themselves are the blob
store's (service/sources/parts.py, or the parts of a multipart upload in the customer's S3,
Azure or GCS area), but for an upload of the latter the few counted bytes not yet in a part.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.extras

from service.storage.app_db import AppDB, is_uuid

_COLUMNS = (
    "id::text AS id, customer_id, filename, length, received, metadata, blob_uri, created_at, expires_at, "
    "finished_at, store"
)


@dataclass(frozen=True)
class Upload:
    """A row of import_uploads."""

    id: str
    customer_id: str
    filename: str
    length: int
    received: int
    metadata: dict[str, str]
    blob_uri: str | None
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    # The multipart upload in the customer's own store its bytes go to (see 0009_upload_parts.sql);
    # None for an upload into the blob root.
    store: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether every byte is stored (the upload can be imported)."""
        return self.finished_at is not None


class UploadStore(AppDB):
    """Create, read, advance, finish and delete uploads."""

    def create(
        self,
        customer_id: str,
        filename: str,
        length: int,
        metadata: dict[str, str],
        hours: float,
        upload_id: str | None = None,
        store: dict[str, Any] | None = None,
    ) -> Upload:
        """A new upload of `length` bytes that expires `hours` from now unless it is finished;
        `store`, the multipart upload its bytes go to (None: the blob root)."""
        with self.transaction() as cur:
            cur.execute(
                f"INSERT INTO import_uploads (id, customer_id, filename, length, metadata, expires_at, store) "
                f"VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s) RETURNING {_COLUMNS}",
                (
                    upload_id or str(uuid.uuid4()),
                    customer_id,
                    filename,
                    length,
                    psycopg2.extras.Json(metadata),
                    hours * 3600.0,
                    None if store is None else psycopg2.extras.Json(store),
                ),
            )
            return Upload(**cur.fetchone())

    def get(self, upload_id: str) -> Upload | None:
        """The upload, or None (also for an id that is not a UUID). An unfinished upload past
        its expiry is gone, whether or not the sweep deleted it yet."""
        if not is_uuid(upload_id):
            return None
        with self.transaction() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM import_uploads WHERE id = %s AND (finished_at IS NOT NULL OR expires_at > now())",
                (upload_id,),
            )
            row = cur.fetchone()
        return Upload(**row) if row else None

    def advance(self, upload_id: str, start: int, end: int) -> bool:
        """Count the bytes [start, end) as stored; False when another request moved the upload
        on from start first (or it expired or finished), and nothing changes."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE import_uploads SET received = %s, updated_at = now() "
                "WHERE id = %s AND received = %s AND finished_at IS NULL AND expires_at > now()",
                (end, upload_id, start),
            )
            return bool(cur.rowcount)

    def pending(self, upload_id: str) -> tuple[list[dict[str, Any]], bytes]:
        """The counted parts of an upload going to a store, and its counted bytes not yet in one."""
        with self.transaction() as cur:
            cur.execute("SELECT parts, tail FROM import_uploads WHERE id = %s", (upload_id,))
            row = cur.fetchone()
        return (row["parts"], bytes(row["tail"])) if row else ([], b"")

    def next_part(self, upload_id: str) -> int:
        """A part number no other request of this upload gets (1, 2, ...)."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE import_uploads SET next_part = next_part + 1 WHERE id = %s RETURNING next_part", (upload_id,)
            )
            row = cur.fetchone()
        if row is None:
            raise LookupError(upload_id)
        return int(row["next_part"])

    def advance_parts(self, upload_id: str, start: int, end: int, parts: list[dict[str, Any]], tail: bytes) -> bool:
        """Count the bytes [start, end) as stored, for an upload going to a store: `parts` are
        appended to its counted parts and `tail` (what is counted but in no part) replaces its
        tail. False when another request moved it on from start first (or it expired or
        finished), and nothing changes."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE import_uploads SET received = %s, parts = parts || %s, tail = %s, updated_at = now() "
                "WHERE id = %s AND received = %s AND finished_at IS NULL AND expires_at > now()",
                (end, psycopg2.extras.Json(parts), tail, upload_id, start),
            )
            return bool(cur.rowcount)

    def finish(self, upload_id: str, blob_uri: str) -> Upload | None:
        """Mark a fully received upload finished, its file at blob_uri; None if it is gone."""
        with self.transaction() as cur:
            cur.execute(
                f"UPDATE import_uploads SET blob_uri = %s, finished_at = now(), updated_at = now(), "
                f"parts = '[]', tail = '' "
                f"WHERE id = %s AND received = length AND finished_at IS NULL RETURNING {_COLUMNS}",
                (blob_uri, upload_id),
            )
            row = cur.fetchone()
        return Upload(**row) if row else None

    def delete(self, upload_id: str) -> Upload | None:
        """Delete the upload's row; the row as it was, or None if there was none."""
        if not is_uuid(upload_id):
            return None
        with self.transaction() as cur:
            cur.execute(f"DELETE FROM import_uploads WHERE id = %s RETURNING {_COLUMNS}", (upload_id,))
            row = cur.fetchone()
        return Upload(**row) if row else None

    def due(self, retention_days: int, limit: int = 100) -> list[Upload]:
        """Uploads whose bytes should go: unfinished ones past their expiry, finished ones
        older than retention_days (the customer's undo retention)."""
        with self.transaction() as cur:
            cur.execute(
                f"(SELECT {_COLUMNS} FROM import_uploads WHERE finished_at IS NULL AND expires_at <= now() "
                f"ORDER BY expires_at LIMIT %(limit)s) UNION ALL "
                f"(SELECT {_COLUMNS} FROM import_uploads "
                f"WHERE finished_at IS NOT NULL AND finished_at <= now() - make_interval(days => %(days)s) "
                f"ORDER BY finished_at LIMIT %(limit)s)",
                {"limit": limit, "days": retention_days},
            )
            return [Upload(**row) for row in cur.fetchall()]
