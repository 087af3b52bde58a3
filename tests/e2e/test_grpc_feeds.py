"""Feeds (SPEC 20) over the real `python -m service.grpc_server` with real workers: CreateFeed,
GetFeed, ListFeeds, UpdateFeed, DeleteFeed, RunFeed, ListFeedFiles and RetryFeedFile through the generated
stubs, with REST's tenancy and refusals (tests/e2e/test_feeds.py tests the feeds themselves)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import pytest
from google.protobuf import empty_pb2

from service.generated import importer_pb2, importer_pb2_grpc
from tests.e2e.conftest import Stack
from tests.e2e.test_feeds import PAST, put
from tests.e2e.test_grpc import ACME, ADMIN, GLOBEX, TIMEOUT, refusal, struct, wait_finished

Importer = importer_pb2_grpc.ImporterStub


@pytest.fixture(scope="module")
def importer(stack: Stack) -> Iterator[Importer]:
    """A stub on the module's own real gRPC server."""
    _, target = stack.grpc_server()
    with grpc.insecure_channel(target) as channel:
        yield importer_pb2_grpc.ImporterStub(channel)


def folder(stack: Stack) -> tuple[Path, str]:
    """A fresh folder of acme's blob area and its prefix_uri."""
    path = stack.blob_root / "acme" / f"feed-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path, path.as_uri() + "/"


def create(importer: Importer, prefix: str, **fields: Any) -> importer_pb2.Feed:
    """A paused feed of acme users on the prefix (paused: the workers' sweep leaves it to RunFeed)."""
    body = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix, "paused": True, **fields}
    body.setdefault("schedule", {"every_seconds": 3600})
    return importer.CreateFeed(struct(**body), metadata=ACME, timeout=TIMEOUT)


def feed_id(feed: importer_pb2.Feed) -> importer_pb2.GetFeedRequest:
    """The request that names the feed."""
    return importer_pb2.GetFeedRequest(feed_id=feed.feed_id)


def changed(importer: Importer, feed: importer_pb2.Feed, **changes: Any) -> importer_pb2.Feed:
    """UpdateFeed with these changes, as acme."""
    request = importer_pb2.UpdateFeedRequest(feed_id=feed.feed_id, changes=struct(**changes))
    return importer.UpdateFeed(request, metadata=ACME, timeout=TIMEOUT)


def names(details: str, field: str) -> bool:
    """Whether a refusal's message names the field itself (schedule, not schedule.cron)."""
    return re.search(rf"(?<![\w.]){re.escape(field)}(?![\w.])", details) is not None


def listed(importer: Importer, metadata: Any, customer_id: str = "") -> set[str]:
    """The ids of the feeds ListFeeds shows these credentials (of one customer, when named)."""
    request = importer_pb2.ListFeedsRequest(customer_id=customer_id, limit=1000)
    return {feed.feed_id for feed in importer.ListFeeds(request, metadata=metadata, timeout=TIMEOUT).feeds}


def test_a_feed_created_over_grpc_imports_its_files_when_run_and_shows_them(stack: Stack, importer: Importer) -> None:
    incoming, prefix = folder(stack)
    put(incoming, "a.csv", range(0, 3))
    put(incoming, "b.csv", range(3, 5))
    put(incoming, "notes.txt", range(0, 1))
    feed = create(importer, prefix, pattern="*.csv", options={"mode": "upsert"})
    assert (feed.customer_id, feed.product_type, feed.prefix_uri, feed.pattern) == ("acme", "users", prefix, "*.csv")
    assert dict(feed.schedule) == {"every_seconds": 3600} and dict(feed.options) == {"mode": "upsert"}
    assert feed.after_success.string_value == "keep" and feed.paused and not feed.late
    assert not feed.HasField("next_run_at") and not feed.HasField("last_run")  # paused, never run
    assert not feed.HasField("expect_every_hours") and not feed.HasField("files") and feed.HasField("created_at")

    run = importer.RunFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)  # a paused feed runs when asked
    assert (run.found, run.enqueued, run.HasField("error")) == (2, 2, False)
    assert (run.feed.last_run.found, run.feed.last_run.enqueued) == (2, 2) and run.feed.HasField("last_new_file_at")
    assert run.feed.files.seen == 2 and {file.key.rsplit("/", 1)[1] for file in run.feed.recent} == {"a.csv", "b.csv"}
    jobs = [wait_finished(importer, file.job_id) for file in run.feed.recent]
    assert [job.status for job in jobs] == ["succeeded", "succeeded"], [job.error for job in jobs]
    assert sorted(job.rows_inserted for job in jobs) == [2, 3]

    shown = importer.GetFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)
    assert shown.files == importer_pb2.FeedFileCounts(seen=2, imported=2)
    assert [(file.status, file.attempts, file.HasField("error")) for file in shown.recent] == [
        ("succeeded", 1, False)
    ] * 2
    again = importer.RunFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)
    assert (again.found, again.enqueued) == (2, 0)  # each version once


def test_a_feed_is_seen_and_listed_only_by_its_customers_tokens(stack: Stack, importer: Importer) -> None:
    _, prefix = folder(stack)
    feed = create(importer, prefix)
    assert feed.feed_id in listed(importer, ACME) and feed.feed_id in listed(importer, ADMIN, "acme")
    assert feed.feed_id not in listed(importer, GLOBEX) and feed.feed_id not in listed(importer, ADMIN, "globex")
    assert len(importer.ListFeeds(importer_pb2.ListFeedsRequest(limit=1), metadata=ACME, timeout=TIMEOUT).feeds) == 1
    for call, request in (
        (importer.GetFeed, feed_id(feed)),
        (importer.RunFeed, feed_id(feed)),
        (importer.DeleteFeed, feed_id(feed)),
        (importer.UpdateFeed, importer_pb2.UpdateFeedRequest(feed_id=feed.feed_id, changes=struct(paused=False))),
        (importer.ListFeedFiles, importer_pb2.ListFeedFilesRequest(feed_id=feed.feed_id)),
        (importer.RetryFeedFile, importer_pb2.RetryFeedFileRequest(feed_id=feed.feed_id, version="0" * 32)),
    ):
        error = refusal(call, request, metadata=GLOBEX)
        assert error.code() == grpc.StatusCode.NOT_FOUND, (call, error.details())
    theirs = importer_pb2.ListFeedsRequest(customer_id="acme")
    assert refusal(importer.ListFeeds, theirs, metadata=GLOBEX).code() == grpc.StatusCode.PERMISSION_DENIED
    body = struct(customer_id="acme", product_type="users", prefix_uri=prefix, schedule={"every_seconds": 60})
    assert refusal(importer.CreateFeed, body, metadata=GLOBEX).code() == grpc.StatusCode.PERMISSION_DENIED
    shown = importer.GetFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)
    assert shown.paused and shown.files == importer_pb2.FeedFileCounts()  # untouched by globex


def test_update_feed_resumes_pauses_and_reschedules_a_feed(stack: Stack, importer: Importer) -> None:
    _, prefix = folder(stack)
    feed = create(importer, prefix)
    resumed = changed(importer, feed, paused=False)
    assert not resumed.paused and resumed.HasField("next_run_at")
    assert resumed.next_run_at.ToDatetime() > resumed.updated_at.ToDatetime()  # an hour away, from now
    paused = changed(importer, feed, paused=True, schedule={"cron": "0  2 * * *"}, expect_every_hours=12)
    assert paused.paused and not paused.HasField("next_run_at")
    assert dict(paused.schedule) == {"cron": "0 2 * * *"} and paused.expect_every_hours == 12
    assert importer.GetFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT).schedule == paused.schedule
    never_late = changed(importer, feed, expect_every_hours=None, after_success="delete")
    assert not never_late.HasField("expect_every_hours") and never_late.after_success.string_value == "delete"
    error = refusal(
        importer.UpdateFeed,
        importer_pb2.UpdateFeedRequest(feed_id=feed.feed_id, changes=struct(prefix_uri=prefix + "other/")),
        metadata=ACME,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and names(error.details(), "prefix_uri")


def test_a_deleted_feed_is_not_found_and_no_longer_listed(stack: Stack, importer: Importer) -> None:
    _, prefix = folder(stack)
    feed = create(importer, prefix)
    assert importer.DeleteFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT) == empty_pb2.Empty()
    for call in (importer.GetFeed, importer.DeleteFeed, importer.RunFeed):
        assert refusal(call, feed_id(feed), metadata=ACME).code() == grpc.StatusCode.NOT_FOUND
    assert feed.feed_id not in listed(importer, ACME)


def test_a_failed_file_is_retried_as_a_new_job_and_a_succeeded_one_is_not(stack: Stack, importer: Importer) -> None:
    incoming, prefix = folder(stack)
    put(incoming, "good.csv", range(10, 12))
    (incoming / "bad.csv").write_text("")  # an empty file fails its job
    os.utime(incoming / "bad.csv", (PAST, PAST))
    feed = create(importer, prefix)
    run = importer.RunFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)
    files = {file.key.rsplit("/", 1)[1]: file for file in run.feed.recent}
    statuses = {name: wait_finished(importer, file.job_id).status for name, file in files.items()}
    assert statuses == {"bad.csv": "failed", "good.csv": "succeeded"}
    assert importer.GetFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT).files.failed == 1

    retry = importer_pb2.RetryFeedFileRequest(feed_id=feed.feed_id, version=files["bad.csv"].version)
    job = importer.RetryFeedFile(retry, metadata=ACME, timeout=TIMEOUT)
    assert job.job_id != files["bad.csv"].job_id and job.blob_uri == files["bad.csv"].key
    assert job.status == "queued" and job.options["feed"]["id"] == feed.feed_id
    assert wait_finished(importer, job.job_id).status == "failed"  # still empty
    shown = {file.key.rsplit("/", 1)[1]: file for file in importer.GetFeed(feed_id(feed), metadata=ACME).recent}
    assert (shown["bad.csv"].job_id, shown["bad.csv"].attempts) == (job.job_id, 2)

    succeeded = importer_pb2.RetryFeedFileRequest(feed_id=feed.feed_id, version=files["good.csv"].version)
    error = refusal(importer.RetryFeedFile, succeeded, metadata=ACME)  # as a replay of a job that has not ended
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert error.details() == f"the file's job {files['good.csv'].job_id} is succeeded; only a failed file is retried"
    unknown = importer_pb2.RetryFeedFileRequest(feed_id=feed.feed_id, version="f" * 32)
    assert refusal(importer.RetryFeedFile, unknown, metadata=ACME).code() == grpc.StatusCode.NOT_FOUND


def file_names(page: importer_pb2.ListFeedFilesResponse) -> list[str]:
    """The names of a page's files, in its order."""
    return [file.key.rsplit("/", 1)[1] for file in page.files]


def test_list_feed_files_pages_through_every_file_newest_first_and_filters_by_state(
    stack: Stack, importer: Importer
) -> None:
    incoming, prefix = folder(stack)
    for number, name in enumerate(("a.csv", "b.csv", "c.csv", "d.csv")):
        put(incoming, name, range(20 + 2 * number, 22 + 2 * number))
    (incoming / "empty.csv").write_text("")  # an empty file fails its job
    os.utime(incoming / "empty.csv", (PAST, PAST))
    feed = create(importer, prefix)
    run = importer.RunFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT)
    assert run.enqueued == 5
    for file in run.feed.recent:
        wait_finished(importer, file.job_id)

    pages, after = [], ""
    while True:
        request = importer_pb2.ListFeedFilesRequest(feed_id=feed.feed_id, limit=2, after=after)
        page = importer.ListFeedFiles(request, metadata=ACME, timeout=TIMEOUT)
        pages.append(file_names(page))
        after = page.next
        if not after:
            break
    # One run's files in reverse key order, each once, two to a page; the last page's next is "".
    assert pages == [["empty.csv", "d.csv"], ["c.csv", "b.csv"], ["a.csv"]]
    everything = importer.ListFeedFiles(importer_pb2.ListFeedFilesRequest(feed_id=feed.feed_id), metadata=ACME)
    assert list(everything.files) == list(importer.GetFeed(feed_id(feed), metadata=ACME).recent)  # the same FeedFile
    assert everything.next == "" and {file.status for file in everything.files} == {"succeeded", "failed"}

    def listed_files(metadata: Any = ACME, **fields: Any) -> importer_pb2.ListFeedFilesResponse:
        request = importer_pb2.ListFeedFilesRequest(feed_id=feed.feed_id, **fields)
        return importer.ListFeedFiles(request, metadata=metadata, timeout=TIMEOUT)

    failed = listed_files(state="failed")
    assert file_names(failed) == ["empty.csv"] and failed.next == ""
    assert failed.files[0].status == "failed" and failed.files[0].HasField("job_id")
    first = listed_files(state="imported", limit=3)
    assert (file_names(first), first.next) == (["d.csv", "c.csv", "b.csv"], first.files[-1].version)
    assert file_names(listed_files(state="imported", limit=3, after=first.next)) == ["a.csv"]
    assert listed_files(state="pending") == importer_pb2.ListFeedFilesResponse()
    assert listed_files(ADMIN, state="failed") == failed

    for fields, named in (
        ({"state": "done"}, "state"),
        ({"limit": -1}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": "0" * 32}, "after"),
        ({"after": "a" * 100}, "after"),
    ):
        request = importer_pb2.ListFeedFilesRequest(feed_id=feed.feed_id, **fields)
        error = refusal(importer.ListFeedFiles, request, metadata=ACME)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and names(error.details(), named), error.details()
    for feed_of, metadata in ((feed.feed_id, GLOBEX), (str(uuid.uuid4()), ACME), ("not-a-feed", ACME)):
        request = importer_pb2.ListFeedFilesRequest(feed_id=feed_of, state="done")  # NOT_FOUND comes first
        assert refusal(importer.ListFeedFiles, request, metadata=metadata).code() == grpc.StatusCode.NOT_FOUND


def test_a_run_while_another_holds_the_feed_is_failed_precondition(stack: Stack, importer: Importer) -> None:
    _, prefix = folder(stack)
    feed = create(importer, prefix)
    leader = psycopg2.connect(stack.app_dsn)  # holds the feed's row as a run's leader does
    try:
        with leader, leader.cursor() as cur:
            cur.execute("SELECT id FROM import_feeds WHERE id = %s FOR UPDATE", (feed.feed_id,))
            error = refusal(importer.RunFeed, feed_id(feed), metadata=ACME)
    finally:
        leader.close()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "in progress" in error.details()
    assert importer.RunFeed(feed_id(feed), metadata=ACME, timeout=TIMEOUT).found == 0


REFUSED = {
    "no schedule": ({"schedule": None}, "schedule"),
    "a schedule of both kinds": ({"schedule": {"every_seconds": 60, "cron": "* * * * *"}}, "schedule"),
    "every second": ({"schedule": {"every_seconds": 1}}, "schedule.every_seconds"),
    "a fraction of seconds": ({"schedule": {"every_seconds": 60.5}}, "schedule.every_seconds"),
    "a cron of words": ({"schedule": {"cron": "every night"}}, "schedule.cron"),
    "another customer's folder": ({"prefix_uri": "{root}/globex/"}, "prefix_uri"),
    "a folder up and out": ({"prefix_uri": "{root}/acme/../globex/"}, "prefix_uri"),
    "a system folder": ({"prefix_uri": "file:///etc/"}, "prefix_uri"),
    "a website": ({"prefix_uri": "https://example.com/files/"}, "prefix_uri"),
    "an unknown after_success": ({"after_success": "archive"}, "after_success"),
    "a negative expect_every_hours": ({"expect_every_hours": -1}, "expect_every_hours"),
    "an unknown mode": ({"options": {"mode": "merge"}}, "options.mode"),
    "an unknown product": ({"product_type": "spaceships"}, "product_type"),
    "an empty pattern": ({"pattern": ""}, "pattern"),
    "a string for paused": ({"paused": "yes"}, "paused"),
    "an unknown field": ({"colour": "red"}, "colour"),
}


@pytest.mark.parametrize("change", REFUSED.values(), ids=list(REFUSED))
def test_a_bad_feed_is_invalid_argument_naming_the_field(
    stack: Stack, importer: Importer, change: tuple[dict[str, Any], str]
) -> None:
    fields, named = change
    _, prefix = folder(stack)
    body: dict[str, Any] = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix}
    body["schedule"] = {"every_seconds": 60}
    body.update(fields)
    body["prefix_uri"] = body["prefix_uri"].replace("{root}", stack.blob_root.as_uri())
    body = {name: value for name, value in body.items() if value is not None}
    error = refusal(importer.CreateFeed, struct(**body), metadata=ACME)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names(error.details(), named), error.details()
    everything = importer_pb2.ListFeedsRequest(limit=1000)
    assert prefix not in {feed.prefix_uri for feed in importer.ListFeeds(everything, metadata=ACME).feeds}


@pytest.mark.parametrize(
    "fields",
    [{"customer_id": "not a customer!"}, {"limit": -1}, {"limit": 1001}],
    ids=["a customer_id with spaces", "a negative limit", "a limit over 1000"],
)
def test_a_bad_list_feeds_request_is_invalid_argument_naming_the_field(
    importer: Importer, fields: dict[str, Any]
) -> None:
    error = refusal(importer.ListFeeds, importer_pb2.ListFeedsRequest(**fields), metadata=ADMIN)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and names(error.details(), next(iter(fields)))


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer tok-nobody"),)])
def test_every_feed_call_without_a_good_token_is_unauthenticated(importer: Importer, metadata: Any) -> None:
    some_feed = importer_pb2.GetFeedRequest(feed_id=str(uuid.uuid4()))
    for call, request in (
        (importer.CreateFeed, struct(product_type="users")),
        (importer.GetFeed, some_feed),
        (importer.ListFeeds, importer_pb2.ListFeedsRequest()),
        (importer.UpdateFeed, importer_pb2.UpdateFeedRequest(feed_id=some_feed.feed_id)),
        (importer.DeleteFeed, some_feed),
        (importer.RunFeed, some_feed),
        (importer.ListFeedFiles, importer_pb2.ListFeedFilesRequest(feed_id=some_feed.feed_id)),
        (importer.RetryFeedFile, importer_pb2.RetryFeedFileRequest(feed_id=some_feed.feed_id, version="0" * 32)),
    ):
        assert refusal(call, request, metadata=metadata).code() == grpc.StatusCode.UNAUTHENTICATED
