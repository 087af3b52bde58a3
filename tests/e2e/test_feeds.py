"""Feeds (SPEC 20) through a real gunicorn and real `dramatiq actors` pools: each version of a
file under a prefix is imported exactly once, whoever runs the feed and however often, across a
worker pool killed in the middle of a run; pause and resume; after_success; the late alarm; and
the refusals."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Databases, query, until
from tests.e2e.conftest import Stack, make_stack
from tests.integration.conftest import start_workers

ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}
PAST = time.time() - 60  # files older than the feed's settle time


@dataclass
class Feeds:
    stack: Stack
    url: str

    def create(self, prefix: str, headers: dict[str, str] = ACME, **fields: Any) -> dict[str, Any]:
        body = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix, **fields}
        body.setdefault("schedule", {"every_seconds": 3600})
        answer = requests.post(f"{self.url}/feeds", json=body, headers=headers, timeout=30)
        assert answer.status_code == 201, answer.text
        assert answer.headers["Location"] == f"/feeds/{answer.json()['feed_id']}"
        return dict(answer.json())

    def refused(self, body: dict[str, Any], headers: dict[str, str] = ACME) -> dict[str, Any]:
        answer = requests.post(f"{self.url}/feeds", json=body, headers=headers, timeout=30)
        assert answer.status_code == 400, answer.text
        return dict(answer.json()["error"])

    def run(self, feed_id: str) -> dict[str, Any]:
        answer = requests.post(f"{self.url}/feeds/{feed_id}/run", headers=ACME, timeout=60)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def get(self, feed_id: str, headers: dict[str, str] = ACME) -> requests.Response:
        return requests.get(f"{self.url}/feeds/{feed_id}", headers=headers, timeout=30)

    def patch(self, feed_id: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.patch(f"{self.url}/feeds/{feed_id}", json=body, headers=ACME, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def jobs(self, feed_id: str) -> list[tuple[str, str, str]]:
        """(blob_uri, status, job id) of every job the feed enqueued, in the order enqueued."""
        rows = query(
            self.stack.app_dsn,
            "SELECT blob_uri, status, id::text FROM import_jobs WHERE options->'feed'->>'id' = %s ORDER BY created_at, id",
            (feed_id,),
        )
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def settled(self, feed_id: str, count: int, timeout: float = 120) -> list[tuple[str, str, str]]:
        """The feed's jobs once there are `count` and none is queued or running."""

        def done() -> bool:
            jobs = self.jobs(feed_id)
            return len(jobs) >= count and all(status not in ("queued", "running") for _, status, _ in jobs)

        until(done, timeout=timeout, interval=0.2)
        return self.jobs(feed_id)


def put(folder: Path, name: str, rows: range, mtime: float = PAST) -> Path:
    """A users CSV with these rows' ids, written long enough ago to be settled."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("external_id,email\n" + "".join(f"u{i},user{i}@example.com\n" for i in rows))
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture(scope="module")
def feeds(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feeds]:
    for stack in make_stack(databases, tmp_path_factory):
        _, url = stack.gunicorn()
        yield Feeds(stack, url)


def folder(feeds: Feeds, name: str) -> tuple[Path, str]:
    path = feeds.stack.blob_root / "acme" / name
    path.mkdir(parents=True, exist_ok=True)
    return path, path.as_uri() + "/"


def test_each_version_of_a_file_is_imported_once_in_key_order(feeds: Feeds) -> None:
    incoming, prefix = folder(feeds, "nightly")
    put(incoming, "b.csv", range(10, 20))
    put(incoming, "a.csv", range(0, 10))
    put(incoming, "notes.txt", range(0, 1))  # not matched by the pattern
    put(incoming, ".a.csv.part", range(0, 1))  # a file still being written under a dot name
    feed = feeds.create(prefix, pattern="*.csv")
    assert feed["prefix_uri"] == prefix and feed["schedule"] == {"every_seconds": 3600} and not feed["paused"]
    first = feeds.run(feed["feed_id"])
    assert (first["found"], first["enqueued"], first["error"]) == (2, 2, None)
    jobs = feeds.settled(feed["feed_id"], 2)
    assert [uri.rsplit("/", 1)[1] for uri, _, _ in jobs] == ["a.csv", "b.csv"]  # key order
    assert [status for _, status, _ in jobs] == ["succeeded", "succeeded"]
    assert feeds.run(feed["feed_id"])["enqueued"] == 0  # seen: nothing new
    put(incoming, "c.csv", range(20, 25))
    assert feeds.run(feed["feed_id"])["enqueued"] == 1
    put(incoming, "a.csv", range(0, 12), mtime=PAST + 5)  # a.csv changed: a new version
    again = feeds.run(feed["feed_id"])
    assert (again["found"], again["enqueued"]) == (3, 1)
    jobs = feeds.settled(feed["feed_id"], 4)
    assert [uri.rsplit("/", 1)[1] for uri, _, _ in jobs] == ["a.csv", "b.csv", "c.csv", "a.csv"]
    assert all(status == "succeeded" for _, status, _ in jobs)
    view = feeds.get(feed["feed_id"]).json()
    assert view["files"] == {"seen": 4, "imported": 4, "failed": 0, "pending": 0}
    assert view["last_run"]["found"] == 3 and view["last_new_file_at"] is not None
    assert {file["status"] for file in view["recent"]} == {"succeeded"} and len(view["recent"]) == 4
    metrics = requests.get(f"{feeds.url}/metrics", timeout=30).text
    labels = f'{{customer="acme",feed="{feed["feed_id"]}"}}'
    for name, value in (("seen", 4), ("enqueued", 4), ("succeeded", 4), ("failed", 0)):
        assert f"import_feed_files_{name}_total{labels} {value}.0" in metrics, name
    assert f"import_feed_late{labels} 0.0" in metrics and f"import_feed_newest_import_age_seconds{labels}" in metrics
    rows = query(feeds.stack.customer_dsns["acme"], "SELECT count(*) FROM users WHERE data->>'external_id' LIKE 'u%%'")
    assert rows[0][0] >= 37  # 10 + 10 + 5 + 12


def test_two_worker_pools_and_many_run_calls_enqueue_each_file_once(feeds: Feeds) -> None:
    incoming, prefix = folder(feeds, "crowded")
    for i in range(40):
        put(incoming, f"part-{i:03d}.csv", range(i * 3, i * 3 + 3))
    second = start_workers(feeds.stack.env)  # another pool against the same app DB
    feeds.stack.pools.append(second)
    feed = feeds.create(prefix, schedule={"every_seconds": 10})
    answers: list[int] = []

    def run_now() -> None:
        answer = requests.post(f"{feeds.url}/feeds/{feed['feed_id']}/run", headers=ACME, timeout=60)
        answers.append(answer.status_code)  # 200, or 409 while another run holds the feed

    callers = [threading.Thread(target=run_now) for _ in range(6)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert set(answers) <= {200, 409} and 200 in answers
    jobs = feeds.settled(feed["feed_id"], 40)
    time.sleep(12)  # the pools' own sweeps run the feed again meanwhile
    jobs = feeds.jobs(feed["feed_id"])
    assert len(jobs) == 40 and len({uri for uri, _, _ in jobs}) == 40
    assert [uri.rsplit("/", 1)[1] for uri, _, _ in jobs] == sorted(f"part-{i:03d}.csv" for i in range(40))
    assert all(status == "succeeded" for _, status, _ in jobs)


def test_a_pool_killed_in_the_middle_of_a_run_leaves_no_file_twice_or_lost(feeds: Feeds) -> None:
    incoming, prefix = folder(feeds, "killed")
    count = 1500
    for i in range(count):
        put(incoming, f"f-{i:05d}.csv", range(i, i + 1))
    for pool in feeds.stack.pools:  # one pool, killed below, leads the run
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait()
    feeds.stack.pools.clear()
    pool = start_workers(feeds.stack.env)
    feeds.stack.pools.append(pool)
    feed = feeds.create(prefix, schedule={"every_seconds": 10})
    # The run enqueues as it lists and commits its ledger at the end: kill it in between.
    until(lambda: len(feeds.jobs(feed["feed_id"])) > 50, timeout=120, interval=0.05)
    ledger = "SELECT count(*) FROM import_feed_files WHERE feed_id = %s"
    assert query(feeds.stack.app_dsn, ledger, (feed["feed_id"],)) == [(0,)], "the run ended before the kill"
    os.killpg(pool.pid, signal.SIGKILL)
    pool.wait()
    feeds.stack.pools[-1] = start_workers(feeds.stack.env)
    jobs = feeds.settled(feed["feed_id"], count, timeout=600)
    assert len(jobs) == count and len({uri for uri, _, _ in jobs}) == count
    assert query(feeds.stack.app_dsn, ledger, (feed["feed_id"],)) == [(count,)]
    assert all(status == "succeeded" for _, status, _ in jobs), {status for _, status, _ in jobs}


def test_a_paused_feed_waits_and_a_resumed_one_goes_on(feeds: Feeds) -> None:
    incoming, prefix = folder(feeds, "paused")
    feed = feeds.create(prefix, schedule={"every_seconds": 10}, paused=True)
    assert feed["paused"] and feed["next_run_at"] is None
    put(incoming, "one.csv", range(100, 105))
    time.sleep(13)  # a sweep or two: nothing
    assert feeds.jobs(feed["feed_id"]) == []
    assert feeds.patch(feed["feed_id"], {"paused": False})["paused"] is False
    jobs = feeds.settled(feed["feed_id"], 1, timeout=60)  # the workers run it within 10 s + a sweep
    assert [status for _, status, _ in jobs] == ["succeeded"]


def test_after_success_deletes_or_moves_only_imported_files(feeds: Feeds) -> None:
    incoming, prefix = folder(feeds, "to-delete")
    put(incoming, "good.csv", range(200, 203))
    (incoming / "bad.csv").write_text("")  # an empty file fails its job
    os.utime(incoming / "bad.csv", (PAST, PAST))
    deleting = feeds.create(prefix, after_success="delete", schedule={"every_seconds": 10})
    feeds.run(deleting["feed_id"])
    jobs = feeds.settled(deleting["feed_id"], 2)
    assert {uri.rsplit("/", 1)[1]: status for uri, status, _ in jobs} == {"bad.csv": "failed", "good.csv": "succeeded"}
    until(lambda: not (incoming / "good.csv").exists(), timeout=30, interval=0.2)
    assert (incoming / "bad.csv").exists()  # a failed file stays, and is not retried by itself
    view = feeds.get(deleting["feed_id"]).json()
    assert view["files"]["failed"] == 1 and view["files"]["imported"] == 1
    failed = next(file for file in view["recent"] if file["key"].endswith("bad.csv"))
    retried = requests.post(
        f"{feeds.url}/feeds/{deleting['feed_id']}/files/{failed['version']}/retry", headers=ACME, timeout=30
    )
    assert retried.status_code == 202, retried.text
    assert retried.json()["job_id"] != failed["job_id"]
    done, _ = folder(feeds, "done")
    moving_in, moving_prefix = folder(feeds, "to-move")
    put(moving_in, "sub/moved.csv", range(300, 303))
    moving = feeds.create(moving_prefix, after_success={"move_to": done.as_uri()}, schedule={"every_seconds": 10})
    assert moving["after_success"] == {"move_to": done.as_uri() + "/"}
    feeds.run(moving["feed_id"])
    feeds.settled(moving["feed_id"], 1)
    until(lambda: (done / "sub" / "moved.csv").exists(), timeout=30, interval=0.2)
    assert not (moving_in / "sub" / "moved.csv").exists()
    assert feeds.run(moving["feed_id"])["enqueued"] == 0


def test_a_feed_without_new_files_for_too_long_is_late(feeds: Feeds) -> None:
    _, prefix = folder(feeds, "quiet")
    feed = feeds.create(prefix, expect_every_hours=0.001, schedule={"every_seconds": 10})  # 3.6 s
    assert feed["late"] is False
    until(lambda: feeds.get(feed["feed_id"]).json()["late"], timeout=60, interval=0.5)


def test_feeds_are_refused_outside_the_customers_area_and_hidden_from_other_tokens(feeds: Feeds) -> None:
    root = feeds.stack.blob_root
    base = {"customer_id": "acme", "product_type": "users", "schedule": {"every_seconds": 60}}
    for prefix in (
        (root / "globex").as_uri(),
        (root / "acme" / ".." / "globex").as_uri(),
        "file:///etc/",
        "https://example.com/files/",
        "s3://bucket/acme/",
    ):
        error = feeds.refused({**base, "prefix_uri": prefix})
        assert error["field"] == "prefix_uri", (prefix, error)
    _, prefix = folder(feeds, "refusals")
    cases = {
        "schedule": {"schedule": {"every_seconds": 60, "cron": "* * * * *"}},
        "schedule.every_seconds": {"schedule": {"every_seconds": 1}},
        "schedule.cron": {"schedule": {"cron": "every night"}},
        "after_success.move_to": {"after_success": {"move_to": prefix + "done/"}},
        "after_success": {"after_success": "archive"},
        "expect_every_hours": {"expect_every_hours": -1},
        "options.mode": {"options": {"mode": "merge"}},
        "product_type": {"product_type": "nope"},
        "pattern": {"pattern": ""},
        "options.member": {"options": {"member": "a\u0000b"}},  # Postgres cannot hold a NUL
        "options.callback_url": {"options": {"callback_url": "https://example.com/hook"}},  # no webhook_prefixes
    }
    for field, change in cases.items():
        error = feeds.refused({**base, "prefix_uri": prefix, **change})
        assert error["field"] == field, (field, error)
    forbidden = requests.post(f"{feeds.url}/feeds", json={**base, "prefix_uri": prefix}, headers=GLOBEX, timeout=30)
    assert forbidden.status_code == 403
    feed = feeds.create(prefix)
    assert feeds.get(feed["feed_id"], GLOBEX).status_code == 404
    assert requests.post(f"{feeds.url}/feeds/{feed['feed_id']}/run", headers=GLOBEX, timeout=30).status_code == 404
    assert requests.delete(f"{feeds.url}/feeds/{feed['feed_id']}", headers=GLOBEX, timeout=30).status_code == 404
    listed = requests.get(f"{feeds.url}/feeds", headers=GLOBEX, timeout=30).json()["feeds"]
    assert feed["feed_id"] not in {item["feed_id"] for item in listed}
    fixed = requests.patch(
        f"{feeds.url}/feeds/{feed['feed_id']}", json={"prefix_uri": prefix}, headers=ACME, timeout=30
    )
    assert fixed.status_code == 400 and fixed.json()["error"]["field"] == "prefix_uri"
    assert requests.delete(f"{feeds.url}/feeds/{feed['feed_id']}", headers=ACME, timeout=30).status_code == 204
    assert feeds.get(feed["feed_id"]).status_code == 404
