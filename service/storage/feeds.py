"""Feeds in the app DB (SPEC 20): what a feed watches and when it runs, and its ledger, one row
per version of a file it has seen with the one job that imports it.

A run is led by whoever holds its feed's row (`SELECT ... FOR UPDATE SKIP LOCKED`) and writes
its ledger rows in that same transaction: two worker pools never run one feed at once, and a
run that dies leaves no ledger row behind (the jobs it enqueued are found again by their
idempotency keys, which are the versions' ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.extras

from service.storage.app_db import AppDB, enqueue, is_uuid
from service.storage.queue import Encoded, feed_event_message

_FEED = (
    "id::text AS id, customer_id, product_type, prefix_uri, pattern, options, schedule, after_success, "
    "expect_every_hours, paused, next_run_at, last_run_at, last_run_error, last_run_found, last_run_enqueued, "
    "last_new_at, late, created_at, updated_at"
)
_FILE = (
    "f.version_id, f.key, f.version, f.size, f.job_id::text AS job_id, f.attempts, f.seen_at, f.settled_at, "
    "f.error, j.status AS job_status"
)
# What a file's state is, by its job's status (None: refused at enqueue, so it has no job).
FILE_STATES = {
    "imported": "j.status IN ('succeeded', 'undone')",
    "failed": "(j.status IN ('failed', 'cancelled') OR f.job_id IS NULL)",
    "pending": "j.status IN ('queued', 'running')",
}
# The columns a client may change (PATCH), as the API names them.
CHANGEABLE = ("paused", "schedule", "options", "pattern", "after_success", "expect_every_hours")


@dataclass(frozen=True)
class Feed:
    """A row of import_feeds."""

    id: str
    customer_id: str
    product_type: str
    prefix_uri: str
    pattern: str
    options: dict[str, Any]
    schedule: dict[str, Any]
    after_success: Any
    expect_every_hours: float | None
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_run_error: str | None
    last_run_found: int | None
    last_run_enqueued: int | None
    last_new_at: datetime | None
    late: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class FeedFile:
    """A version of a file a feed has seen, and its job (None: refused at enqueue, `error` says why)."""

    version_id: str
    key: str
    version: str
    size: int
    job_id: str | None
    attempts: int
    seen_at: datetime
    settled_at: datetime | None
    error: str | None
    job_status: str | None


class Run:
    """The transaction a feed's run holds: its ledger is written here, committed at the end."""

    def __init__(self, cur: psycopg2.extras.RealDictCursor, feed: Feed) -> None:
        self._cur = cur
        self.feed = feed

    def seen(self, version_ids: Sequence[str]) -> set[str]:
        """Which of these versions the feed has seen already."""
        self._cur.execute(
            "SELECT version_id FROM import_feed_files WHERE feed_id = %s AND version_id = ANY(%s)",
            (self.feed.id, list(version_ids)),
        )
        return {row["version_id"] for row in self._cur.fetchall()}

    def record(
        self, version_id: str, key: str, version: str, size: int, job_id: str | None, error: str | None = None
    ) -> None:
        """Write a version's ledger row: its job, or why it has none."""
        # A file its feed keeps has nothing to do after its import: settled from the start.
        self._cur.execute(
            "INSERT INTO import_feed_files (feed_id, version_id, key, version, size, job_id, error, settled_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)",
            (self.feed.id, version_id, key, version, size, job_id, error, self.feed.after_success == "keep"),
        )

    def finish(self, next_run_at: datetime, found: int, enqueued: int, error: str | None) -> None:
        """Record how the run went and when the next one is due."""
        self._cur.execute(
            "UPDATE import_feeds SET next_run_at = %s, last_run_at = now(), last_run_found = %s, "
            "last_run_enqueued = %s, last_run_error = %s, "
            "last_new_at = CASE WHEN %s > 0 THEN now() ELSE last_new_at END, "
            "late = CASE WHEN %s > 0 THEN false ELSE late END WHERE id = %s",
            (next_run_at, found, enqueued, error, enqueued, enqueued, self.feed.id),
        )


class FeedStore(AppDB):
    """Create, read, change and delete feeds; lead their runs; keep their ledgers."""

    def create(self, values: dict[str, Any]) -> Feed:
        """A new feed, due at once unless created paused."""
        with self.transaction() as cur:
            cur.execute(
                f"INSERT INTO import_feeds (id, customer_id, product_type, prefix_uri, pattern, options, schedule, "
                f"after_success, expect_every_hours, paused) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"RETURNING {_FEED}",
                (
                    str(uuid.uuid4()),
                    values["customer_id"],
                    values["product_type"],
                    values["prefix_uri"],
                    values["pattern"],
                    psycopg2.extras.Json(values["options"]),
                    psycopg2.extras.Json(values["schedule"]),
                    psycopg2.extras.Json(values["after_success"]),
                    values["expect_every_hours"],
                    bool(values.get("paused", False)),
                ),
            )
            return Feed(**cur.fetchone())

    def get(self, feed_id: str) -> Feed | None:
        """The feed, or None (also for an id that is not a UUID)."""
        if not is_uuid(feed_id):
            return None
        with self.transaction() as cur:
            cur.execute(f"SELECT {_FEED} FROM import_feeds WHERE id = %s", (feed_id,))
            row = cur.fetchone()
        return Feed(**row) if row else None

    def feeds(self, customers: list[str] | None, limit: int) -> list[Feed]:
        """Feeds of these customers (None: all), oldest first."""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT {_FEED} FROM import_feeds WHERE (%(all)s OR customer_id = ANY(%(customers)s)) "
                f"ORDER BY created_at, id LIMIT %(limit)s",
                {"all": customers is None, "customers": customers or [], "limit": limit},
            )
            return [Feed(**row) for row in cur.fetchall()]

    def update(self, feed_id: str, changes: dict[str, Any], next_run_at: datetime | None) -> Feed | None:
        """Change some of CHANGEABLE (and when the next run is due); the feed as it now is."""
        sets = [f"{name} = %s" for name in changes if name in CHANGEABLE]
        values: list[Any] = [
            psycopg2.extras.Json(value) if name in ("schedule", "options", "after_success") else value
            for name, value in changes.items()
            if name in CHANGEABLE
        ]
        if next_run_at is not None:
            sets.append("next_run_at = %s")
            values.append(next_run_at)
        with self.transaction() as cur:
            cur.execute(
                f"UPDATE import_feeds SET {', '.join([*sets, 'updated_at = now()'])} WHERE id = %s RETURNING {_FEED}",
                (*values, feed_id),
            )
            row = cur.fetchone()
        return Feed(**row) if row else None

    def delete(self, feed_id: str) -> bool:
        """Delete the feed and its ledger (its jobs stay); False if there was none."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM import_feeds WHERE id = %s", (feed_id,))
            return bool(cur.rowcount)

    @contextmanager
    def lead(self, feed_id: str | None = None) -> Iterator[Run | None]:
        """Lead one run: of this feed (None while another holds it), or of the feed due first
        that nobody leads (None: none is due). The ledger rows and the run's end commit together."""
        with self.transaction() as cur:
            if feed_id is None:
                cur.execute(
                    f"SELECT {_FEED} FROM import_feeds WHERE NOT paused AND next_run_at <= now() "
                    f"ORDER BY next_run_at FOR UPDATE SKIP LOCKED LIMIT 1"
                )
            else:
                cur.execute(f"SELECT {_FEED} FROM import_feeds WHERE id = %s FOR UPDATE SKIP LOCKED", (feed_id,))
            row = cur.fetchone()
            yield Run(cur, Feed(**row)) if row else None

    def files(
        self, feed_id: str, limit: int = 10, state: str | None = None, after: str | None = None
    ) -> list[FeedFile]:
        """The feed's files (their versions), newest first (a run's in reverse key order), with
        their jobs' status: only those in `state` (FILE_STATES), only those after the version
        `after` in that order (the last one of the page before)."""
        where = ["f.feed_id = %s"]
        params: list[Any] = [feed_id]
        if state is not None:
            where.append(FILE_STATES[state])
        if after is not None:
            where.append(
                "(f.seen_at, f.key, f.version_id) < "
                "(SELECT seen_at, key, version_id FROM import_feed_files WHERE feed_id = %s AND version_id = %s)"
            )
            params += [feed_id, after]
        with self.transaction() as cur:
            cur.execute(
                f"SELECT {_FILE} FROM import_feed_files f LEFT JOIN import_jobs j ON j.id = f.job_id "
                f"WHERE {' AND '.join(where)} ORDER BY f.seen_at DESC, f.key DESC, f.version_id DESC LIMIT %s",
                (*params, limit),
            )
            return [FeedFile(**row) for row in cur.fetchall()]

    def file(self, feed_id: str, version_id: str) -> FeedFile | None:
        """One version of a file the feed has seen."""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT {_FILE} FROM import_feed_files f LEFT JOIN import_jobs j ON j.id = f.job_id "
                f"WHERE f.feed_id = %s AND f.version_id = %s",
                (feed_id, version_id),
            )
            row = cur.fetchone()
        return FeedFile(**row) if row else None

    def retried(self, feed_id: str, version_id: str, job_id: str, attempts: int) -> bool:
        """Give the version a new job (a retry); False when another retry came first."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE import_feed_files SET job_id = %s, attempts = attempts + 1, error = NULL, settled_at = NULL "
                "WHERE feed_id = %s AND version_id = %s AND attempts = %s",
                (job_id, feed_id, version_id, attempts),
            )
            return bool(cur.rowcount)

    def counts(self, feed_id: str) -> dict[str, int]:
        """Files seen, imported (their job succeeded), failed (failed, cancelled, or refused at
        enqueue) and pending (queued or running)."""
        with self.transaction() as cur:
            cur.execute(
                "SELECT count(*) AS seen, "
                + ", ".join(f"count(*) FILTER (WHERE {test}) AS {state}" for state, test in FILE_STATES.items())
                + " "
                "FROM import_feed_files f LEFT JOIN import_jobs j ON j.id = f.job_id WHERE f.feed_id = %s",
                (feed_id,),
            )
            return {name: int(value) for name, value in cur.fetchone().items()}

    def unsettled(self, limit: int = 100) -> list[tuple[str, FeedFile]]:
        """Files whose job succeeded and whose feed's after_success is still to do: (feed id, file)."""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT f.feed_id::text AS feed_id, {_FILE} FROM import_feed_files f "
                f"JOIN import_jobs j ON j.id = f.job_id JOIN import_feeds d ON d.id = f.feed_id "
                f"WHERE f.settled_at IS NULL AND j.status = 'succeeded' AND d.after_success <> '\"keep\"' "
                f"ORDER BY f.seen_at LIMIT %s",
                (limit,),
            )
            rows = cur.fetchall()
        return [(row.pop("feed_id"), FeedFile(**row)) for row in rows]

    def settle(self, feed_id: str, version_id: str) -> None:
        """after_success is done for this version (or needs no doing)."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE import_feed_files SET settled_at = now() WHERE feed_id = %s AND version_id = %s",
                (feed_id, version_id),
            )

    def mark_late(self) -> list[Feed]:
        """Feeds that found no new file for expect_every_hours and were not late yet: now they
        are, and those with a callback_url option get their feed.late webhook queued."""
        with self.transaction() as cur:
            cur.execute(
                f"UPDATE import_feeds SET late = true WHERE NOT late AND NOT paused AND expect_every_hours IS NOT NULL "
                f"AND coalesce(last_new_at, created_at) < now() - make_interval(secs => expect_every_hours * 3600) "
                f"RETURNING {_FEED}"
            )
            late = [Feed(**row) for row in cur.fetchall()]
            for feed in late:  # its webhook commits with the flag it reports
                if feed.options.get("callback_url"):
                    enqueue(cur, feed_event_message(feed.id, "feed.late"))
            return late

    def log_event(self, retry: Encoded | None) -> None:
        """Queue the next attempt of a feed event's delivery."""
        if retry is not None:
            with self.transaction() as cur:
                enqueue(cur, retry)

    def all_feeds(self) -> list[Feed]:
        """Every feed (for the metrics)."""
        return self.feeds(None, 100_000)
