"""The feed stage (SPEC 20) against a real app DB and blob root, without workers: what a run
records when a file is refused, when the feed itself no longer holds, when a file is still
being written, and what a retry pins. The whole loop through real workers is
tests/e2e/test_feeds.py's."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Config
from service.errors import JobConflict, RequestRefused
from service.schema.products import ProductRegistry
from service.stages import feeds
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.feeds import Feed, FeedStore
from service.storage.jobs import JobStore, migrate
from tests.conftest import Databases, query

PAST = time.time() - 60


@pytest.fixture
def setup(databases: Databases, tmp_path: Path) -> Iterator[tuple[Services, FeedStore]]:
    dsn = databases.create("app")
    migrate(dsn)
    (tmp_path / "acme" / "in").mkdir(parents=True)
    config = Config(app_db_dsn=dsn, blob_root=tmp_path, customers={"acme": "dbname=acme"}, max_file_bytes=1000)
    jobs = JobStore(dsn, dispatch=dispatch, maxconn=2)
    store = FeedStore(dsn, maxconn=2)
    try:
        yield Services(config, jobs, ProductRegistry.load(config.schemas_dir), dsn), store
    finally:
        store.close()
        jobs.close()


def put(services: Services, name: str, body: str, mtime: float = PAST) -> Path:
    path = services.config.blob_root / "acme" / "in" / name
    path.write_text(body)
    os.utime(path, (mtime, mtime))
    return path


def create(services: Services, store: FeedStore, **fields: object) -> Feed:
    prefix = (services.config.blob_root / "acme" / "in").as_uri()
    body = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix, "schedule": {"every_seconds": 60}}
    values = feeds.check_feed({**body, **fields}, services.config, services.products)
    values["after_success"] = feeds.check_after_success(
        values["after_success"], "acme", values["prefix_uri"], services.config
    )
    return store.create(values)


def run(services: Services, store: FeedStore, feed: Feed) -> feeds.RunResult:
    with store.lead(feed.id) as lead:
        assert lead is not None
        return feeds.run(services, lead)


def test_a_refused_file_is_recorded_failed_once_and_the_others_go_on(setup: tuple[Services, FeedStore]) -> None:
    services, store = setup
    put(services, "a.csv", "external_id,email\nu1,a@example.com\n")
    put(services, "big.csv", "external_id,email\n" + "u2,b@example.com\n" * 100)  # over max_file_bytes
    feed = create(services, store)
    assert run(services, store, feed) == feeds.RunResult(2, 2, None)
    files = {file.key.rsplit("/", 1)[1]: file for file in store.files(feed.id)}
    assert files["a.csv"].job_id is not None and files["a.csv"].error is None
    assert files["big.csv"].job_id is None and "max_file_bytes" in (files["big.csv"].error or "")
    assert store.counts(feed.id)["failed"] == 1
    assert run(services, store, feed) == feeds.RunResult(2, 0, None)  # the refused file is not tried again
    # A retry of a refused file is refused again, naming the file's problem.
    with pytest.raises(RequestRefused, match="max_file_bytes"):
        feeds.retry(services, store, feed, files["big.csv"])


def test_a_feed_whose_definition_no_longer_holds_stops_without_blaming_a_file(
    setup: tuple[Services, FeedStore],
) -> None:
    services, store = setup
    put(services, "a.csv", "external_id,email\nu1,a@example.com\n")
    feed = create(services, store)
    gone = dataclasses.replace(services, config=dataclasses.replace(services.config, customers={"other": "dbname=x"}))
    result = run(gone, store, feed)
    assert (result.enqueued, result.error is not None) == (0, True)
    assert "unknown customer" in (result.error or "")
    assert store.files(feed.id) == []  # nothing recorded: the next run, once fixed, imports it
    assert store.get(feed.id).last_run_error == result.error  # type: ignore[union-attr]
    assert run(services, store, feed).enqueued == 1


def test_a_file_changed_in_the_last_seconds_waits_for_the_next_run(setup: tuple[Services, FeedStore]) -> None:
    services, store = setup
    put(services, "fresh.csv", "external_id,email\nu1,a@example.com\n", mtime=time.time())
    feed = create(services, store)
    assert run(services, store, feed) == feeds.RunResult(0, 0, None)
    os.utime(services.config.blob_root / "acme" / "in" / "fresh.csv", (PAST, PAST))
    assert run(services, store, feed) == feeds.RunResult(1, 1, None)


def test_a_retry_is_pinned_to_the_version_the_feed_listed(setup: tuple[Services, FeedStore]) -> None:
    services, store = setup
    path = put(services, "a.csv", "external_id,email\nu1,a@example.com\n")
    feed = create(services, store)
    run(services, store, feed)
    (file,) = store.files(feed.id)
    query(services.app_dsn, "UPDATE import_jobs SET status = 'failed' WHERE id = %s", (file.job_id,))
    file = store.file(feed.id, file.version_id)
    assert file is not None and file.job_status == "failed"
    job = feeds.retry(services, store, feed, file)
    info = path.stat()
    assert job.options["feed"]["version"] == {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    again = store.file(feed.id, file.version_id)
    assert again is not None and (again.job_id, again.attempts) == (job.id, 2)
    with pytest.raises(JobConflict, match="is queued; only a failed file is retried"):
        feeds.retry(services, store, feed, again)


def test_schedules_give_the_next_run() -> None:
    start = feeds.datetime(2026, 12, 7, 1, 30, tzinfo=feeds.UTC)
    assert feeds.next_run({"every_seconds": 60}, start) == start + feeds.timedelta(seconds=60)
    assert feeds.next_run({"cron": "0 2 * * *"}, start) == feeds.datetime(2026, 12, 7, 2, 0, tzinfo=feeds.UTC)
    for bad, field in (
        ({"every_seconds": 9}, "schedule.every_seconds"),
        ({"every_seconds": True}, "schedule.every_seconds"),
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "* * * *"}, "schedule.cron"),
        ({}, "schedule"),
        ("hourly", "schedule"),
    ):
        with pytest.raises(RequestRefused) as refused:
            feeds.check_schedule(bad)
        assert refused.value.field == field, bad


def test_blob_root_files_come_in_the_order_of_their_keys_as_s3_lists_them(setup: tuple[Services, FeedStore]) -> None:
    services, store = setup
    for name in ("a/x.csv", "a.csv", "a-b.csv", "b.csv"):
        (services.config.blob_root / "acme" / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        put(services, name, "external_id,email\nu1,a@example.com\n")
    feed = create(services, store)
    run(services, store, feed)
    enqueued = query(services.app_dsn, "SELECT blob_uri FROM import_jobs ORDER BY created_at, id")
    keys = [str(uri).rsplit("/in/", 1)[1] for (uri,) in enqueued]
    assert keys == sorted(["a/x.csv", "a.csv", "a-b.csv", "b.csv"]) == ["a-b.csv", "a.csv", "a/x.csv", "b.csv"]
