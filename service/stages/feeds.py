"""Feeds (SPEC 20): a prefix of a customer's area whose files are imported once per version.

A run lists the prefix in key order, a page at a time (`prefixes.listing`), asks the ledger
which versions of the page it has seen, and enqueues a job for each new one, in key order, with
the version's id as the job's idempotency key; its ledger rows commit with the run's end, in the
transaction that holds the feed's row (`FeedStore.lead`). So one feed has one leader at a time
however many workers look, a version is enqueued once, and a run that dies is done again by the
next one without a second job (the idempotency key answers the first). The workers' sweep
runs what is due, does `after_success` for files whose job succeeded, and raises the late alarm.

A job a feed enqueued carries its version (option `feed`): if the file changed between the
listing and the job's fetch, the job fails naming that, and the next run imports the new
version as a new file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.config import CUSTOMER_ID, Config
from service.errors import BlobRefused, BlobUnavailable, JobConflict, RequestRefused
from service.schema.products import ProductRegistry
from service.sources import blob, prefixes
from service.stages import webhooks
from service.stages.enqueue import check_options, check_request, enqueue, refuse_bad_text, shown
from service.stages.services import Services
from service.storage.feeds import Feed, FeedFile, FeedStore, Run
from service.storage.jobs import IdempotencyConflict, Job

log = logging.getLogger(__name__)

FIELDS = (
    "customer_id",
    "product_type",
    "prefix_uri",
    "pattern",
    "options",
    "schedule",
    "after_success",
    "expect_every_hours",
    "paused",
)
MIN_EVERY_SECONDS = 10  # the workers look for due feeds every 10 s
MAX_EVERY_SECONDS = 366 * 24 * 3600
MAX_PATTERN_CHARS = 500
MAX_EXPECT_HOURS = 366 * 24
PAGE = 500  # listed files asked of the ledger at once
# A file of the blob root changed this recently may still be being written: the next run takes it.
SETTLE_SECONDS = 5.0
RUNS_PER_SWEEP = 20  # due feeds one worker's sweep runs, at most, before it lets the others


class FeedNotFound(Exception):
    """No such feed, or one the caller may not see."""


class FeedBusy(Exception):
    """Another run of the feed is in progress."""


class FeedBroken(Exception):
    """The feed's definition no longer holds (its customer, product or options are refused now):
    the run stops without blaming any file."""


@dataclass(frozen=True)
class RunResult:
    """What a run did: files that match, new versions enqueued (or refused), and what stopped it."""

    found: int
    enqueued: int
    error: str | None


def version_id(uri: str, version: str) -> str:
    """A file version's id in the ledger and in URLs: 32 hex characters of its sha256."""
    return hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()[:32]


def version_text(size: int, version: Mapping[str, Any]) -> str:
    """A version as the ledger keeps it: size:mtime_ns of a file, else the ETag or the generation."""
    if "mtime_ns" in version:
        return f"{size}:{version['mtime_ns']}"
    return str(version.get("etag") or version.get("generation"))


def version_of(uri: str, size: int, text: str) -> dict[str, Any]:
    """A ledger's version (version_text) as blob.check names it, with the size."""
    if uri.startswith("file:"):
        return {"size": size, "mtime_ns": int(text.partition(":")[2])}
    if uri.startswith("gs:"):
        return {"size": size, "generation": int(text)}
    return {"size": size, "etag": text}


# -- a feed's definition ---------------------------------------------------------------------


def check_feed(body: Any, config: Config, products: ProductRegistry, creating: bool = True) -> dict[str, Any]:
    """A feed's definition (POST /feeds), or the changes to one (PATCH: creating=False, only the
    fields given), checked; RequestRefused naming the field otherwise."""
    if not isinstance(body, Mapping):
        raise RequestRefused("the request body must be a JSON object", field=None)
    refuse_bad_text(body)  # NUL characters, lone surrogates, deep nesting: as enqueue refuses them
    unknown = sorted(str(name) for name in set(body) - set(FIELDS))
    if unknown:
        raise RequestRefused(f"unknown field(s): {', '.join(map(shown, unknown[:5]))}", field=unknown[0][:60])
    if not creating:
        fixed = [name for name in ("customer_id", "product_type", "prefix_uri") if name in body]
        if fixed:
            raise RequestRefused(f"{fixed[0]} of a feed cannot change; create another feed", field=fixed[0])
    checked: dict[str, Any] = {}
    if creating:
        for name in ("customer_id", "product_type", "prefix_uri", "schedule"):
            if body.get(name) is None:
                raise RequestRefused(f"{name} is required", field=name)
        customer = body["customer_id"]
        if not isinstance(customer, str) or not CUSTOMER_ID.match(customer) or customer not in config.customers:
            raise RequestRefused(f"unknown customer {shown(str(customer))}", field="customer_id")
        if not isinstance(body["product_type"], str):
            raise RequestRefused("product_type must be a string", field="product_type")
        products.get(body["product_type"])  # RequestRefused naming product_type
        checked.update(customer_id=customer, product_type=body["product_type"])
        checked["prefix_uri"] = _check_prefix(body["prefix_uri"], customer, config, "prefix_uri")
        checked.update(pattern="*", options={}, after_success="keep", expect_every_hours=None)
    if "pattern" in body:
        pattern = body["pattern"]
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS or "\x00" in pattern:
            raise RequestRefused(f"pattern must be a glob of 1 to {MAX_PATTERN_CHARS} characters", field="pattern")
        checked["pattern"] = pattern
    if "options" in body:
        checked["options"] = check_options(body["options"])
    if "schedule" in body:
        checked["schedule"] = check_schedule(body["schedule"])
    if "expect_every_hours" in body:
        hours = body["expect_every_hours"]
        if hours is not None and (
            isinstance(hours, bool)
            or not isinstance(hours, (int, float))
            or not math.isfinite(hours)
            or not 0 < hours <= MAX_EXPECT_HOURS
        ):
            raise RequestRefused(
                f"expect_every_hours must be a number of hours above 0, at most {MAX_EXPECT_HOURS}, or null",
                field="expect_every_hours",
            )
        checked["expect_every_hours"] = None if hours is None else float(hours)
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            raise RequestRefused("paused must be true or false", field="paused")
        checked["paused"] = body["paused"]
    if "after_success" in body:
        checked["after_success"] = body["after_success"]  # checked against the prefix by check_after_success
    return checked


def check_feed_options(
    options: Mapping[str, Any], customer: str, product_type: str, config: Config, products: ProductRegistry
) -> None:
    """Refuse options every job of the feed would be refused for (as enqueue checks them against
    the customer and product): a mode the product cannot take, a callback_url the customer may
    not use."""
    if options.get("mode", "append") != "append" and products.get(product_type).key is None:
        raise RequestRefused(
            f"product {product_type} has no x-key in its schema, so only mode append is possible",
            field="options.mode",
        )
    if "callback_url" in options:
        problem = webhooks.refusal(options["callback_url"], customer, config.customer_settings.get(customer))
        if problem is not None:
            raise RequestRefused(problem, field="options.callback_url")


def check_after_success(value: Any, customer: str, prefix_uri: str, config: Config) -> Any:
    """ "keep", "delete" or {"move_to": a prefix of the same store in the customer's area, not
    under the feed's own prefix (the moved files would come back as new ones)}."""
    if value in ("keep", "delete"):
        return value
    if not isinstance(value, Mapping) or set(value) != {"move_to"}:
        raise RequestRefused('after_success must be "keep", "delete" or {"move_to": prefix_uri}', field="after_success")
    target = _check_prefix(value["move_to"], customer, config, "after_success.move_to")
    if target.split("://", 1)[0] != prefix_uri.split("://", 1)[0]:
        raise RequestRefused(
            "after_success.move_to must be in the same store as prefix_uri", field="after_success.move_to"
        )
    if target.startswith(prefix_uri):
        raise RequestRefused(
            "after_success.move_to must not lie under prefix_uri: the feed would import the moved files again",
            field="after_success.move_to",
        )
    return {"move_to": target}


def _check_prefix(uri: Any, customer: str, config: Config, field: str) -> str:
    """The prefix's URI (ending in '/'), refused naming the field unless it is in the customer's area."""
    if not isinstance(uri, str) or not uri or len(uri) > 4096:
        raise RequestRefused(f"{field} must be a file://, s3://, az:// or gs:// URI", field=field)
    try:
        return prefixes.uri_of(prefixes.locate(uri, customer, config))
    except BlobRefused as exc:
        raise RequestRefused(str(exc).replace("blob_uri", field), field=field) from None


def check_schedule(schedule: Any) -> dict[str, Any]:
    """{"every_seconds": N} or {"cron": "five fields"} (UTC)."""
    if isinstance(schedule, Mapping) and set(schedule) == {"every_seconds"}:
        every = schedule["every_seconds"]
        if isinstance(every, float) and every.is_integer():
            every = int(every)  # a gRPC Struct carries every number as a double
        if isinstance(every, int) and not isinstance(every, bool) and MIN_EVERY_SECONDS <= every <= MAX_EVERY_SECONDS:
            return {"every_seconds": every}
        raise RequestRefused(
            f"schedule.every_seconds must be a whole number from {MIN_EVERY_SECONDS} to {MAX_EVERY_SECONDS:,}",
            field="schedule.every_seconds",
        )
    if isinstance(schedule, Mapping) and set(schedule) == {"cron"}:
        from croniter import croniter

        expression = schedule["cron"]
        if isinstance(expression, str) and len(expression.split()) == 5 and croniter.is_valid(expression):
            return {"cron": " ".join(expression.split())}
        raise RequestRefused(
            'schedule.cron must be a cron expression of five fields (minute hour day month weekday), e.g. "0 2 * * *"',
            field="schedule.cron",
        )
    raise RequestRefused('schedule must be {"every_seconds": N} or {"cron": "..."}', field="schedule")


def next_run(schedule: Mapping[str, Any], after: datetime | None = None) -> datetime:
    """When a feed on this schedule runs next, after `after` (default: now), in UTC."""
    now = after or datetime.now(UTC)
    if "every_seconds" in schedule:
        return now + timedelta(seconds=int(schedule["every_seconds"]))
    from croniter import croniter

    found: datetime = croniter(schedule["cron"], now).get_next(datetime)
    return found


# -- runs ------------------------------------------------------------------------------------


def run(services: Services, lead: Run) -> RunResult:
    """List the feed's prefix and enqueue each version the ledger has not seen, in key order;
    record the run and when the next one is due. A store that cannot be reached (or refuses)
    ends the run early, its error recorded; what it enqueued stays (the next run goes on)."""
    feed = lead.feed
    found = enqueued = 0
    error = None
    page: list[tuple[blob.Blob, str, int, dict[str, Any]]] = []
    settled_before = time.time_ns() - int(SETTLE_SECONDS * 1e9)
    try:
        prefix = prefixes.locate(feed.prefix_uri, feed.customer_id, services.config)
        for item in prefixes.listing(prefix):
            found_blob, name, size, version = item
            if not fnmatch.fnmatchcase(name, feed.pattern):
                continue
            if version.get("mtime_ns", 0) > settled_before:
                continue  # maybe still being written: the next run sees it
            found += 1
            page.append(item)
            if len(page) >= PAGE:
                enqueued += _enqueue_new(services, lead, page)
                page = []
        enqueued += _enqueue_new(services, lead, page)
    except (BlobRefused, BlobUnavailable, FeedBroken) as exc:
        error = str(exc).replace("blob_uri", "prefix_uri")  # the prefix's own check speaks of a blob
        log.warning("feed %s: the run stopped: %s", feed.id, error)
    lead.finish(next_run(feed.schedule), found, enqueued, error)
    if enqueued:
        log.info("feed %s: %d new file(s) of %d enqueued", feed.id, enqueued, found)
    return RunResult(found, enqueued, error)


def _enqueue_new(services: Services, lead: Run, page: list[tuple[blob.Blob, str, int, dict[str, Any]]]) -> int:
    """Enqueue the page's versions the ledger has not seen, in order; how many."""
    feed = lead.feed
    named = []
    for found_blob, _, size, version in page:
        uri = prefixes.uri_of_blob(found_blob)
        named.append((version_id(uri, version_text(size, version)), uri, size, version))
    seen = lead.seen([vid for vid, *_ in named])
    new = 0
    for vid, uri, size, version in named:
        if vid in seen:
            continue
        body: dict[str, Any] = {"customer_id": feed.customer_id, "product_type": feed.product_type, "blob_uri": uri}
        if feed.options:
            body["options"] = feed.options
        try:
            request = check_request(body, services.config, services.products)
            request.options["feed"] = {"id": feed.id, "version_id": vid, "version": {"size": size, **version}}
            job, _ = enqueue(request, services.jobs, idempotency_key=f"feed:{feed.id}:{vid}")
        except RequestRefused as exc:
            if exc.field != "blob_uri":  # the feed's own definition no longer holds: no file is to blame
                raise FeedBroken(f"{exc} ({exc.field})") from None
            lead.record(vid, uri, version_text(size, version), size, None, str(exc))
        except IdempotencyConflict as exc:
            lead.record(vid, uri, version_text(size, version), size, None, str(exc))
        else:
            lead.record(vid, uri, version_text(size, version), size, job.id)
        new += 1
    return new


def run_now(services: Services, store: FeedStore, feed: Feed) -> RunResult:
    """Run the feed at once (POST /feeds/<id>/run), paused or not; FeedBusy while another run is."""
    with store.lead(feed.id) as lead:
        if lead is None:
            if store.get(feed.id) is None:
                raise FeedNotFound(f"no feed {feed.id}")
            raise FeedBusy(f"a run of feed {feed.id} is in progress; try again when it ends")
        return run(services, lead)


def retry(services: Services, store: FeedStore, feed: Feed, file: FeedFile) -> Job:
    """Import a version whose job failed (or was refused) again: a new job; JobConflict while
    its job has not failed (as replay answers), RequestRefused when it cannot be enqueued now."""
    if file.job_status not in ("failed", "cancelled") and file.job_id is not None:
        raise JobConflict(f"the file's job {file.job_id} is {file.job_status}; only a failed file is retried")
    body: dict[str, Any] = {"customer_id": feed.customer_id, "product_type": feed.product_type, "blob_uri": file.key}
    if feed.options:
        body["options"] = feed.options
    try:
        request = check_request(body, services.config, services.products)
    except RequestRefused as exc:
        raise RequestRefused(f"the file cannot be imported again: {exc}", field="version") from None
    listed = {"id": feed.id, "version_id": file.version_id, "retry": file.attempts}
    request.options["feed"] = {**listed, "version": version_of(file.key, file.size, file.version)}
    job, _ = enqueue(request, services.jobs, idempotency_key=f"feed:{feed.id}:{file.version_id}:{file.attempts}")
    if not store.retried(feed.id, file.version_id, job.id, file.attempts):
        now = store.file(feed.id, file.version_id)
        if now is None or now.job_id != job.id:  # (a retry racing this one has the same key: its job)
            raise JobConflict("another retry of this file came first; the feed's view shows its job")
    return job


# -- the workers' sweep ----------------------------------------------------------------------


def sweep(services: Services, store: FeedStore) -> int:
    """Run the feeds that are due (one leader each), do after_success, raise late alarms; how
    many runs this sweep led."""
    runs = 0
    for _ in range(RUNS_PER_SWEEP):
        with store.lead() as lead:
            if lead is None:
                break
            run(services, lead)
            runs += 1
    settle(services, store)
    for feed in store.mark_late():
        log.warning(
            "feed %s (customer %s) is late: no new file under %s for %g hours",
            feed.id,
            feed.customer_id,
            feed.prefix_uri,
            feed.expect_every_hours or 0,
        )
    return runs


def settle(services: Services, store: FeedStore) -> None:
    """Delete or move the files whose job succeeded, as their feed's after_success says; a file
    that changed since it was listed is left where it is (its new version is a new file)."""
    feeds: dict[str, Feed | None] = {}
    for feed_id, file in store.unsettled():
        feed = feeds.setdefault(feed_id, store.get(feed_id))
        if feed is None:
            continue
        try:
            _after_success(services.config, feed, file)
        except BlobUnavailable as exc:
            log.warning("feed %s: %s not moved or deleted this time: %s", feed.id, file.key, exc)
            continue
        store.settle(feed.id, file.version_id)


def _after_success(config: Config, feed: Feed, file: FeedFile) -> None:
    action = feed.after_success
    if action == "keep":
        return
    try:
        found, size, version = blob.check(blob.locate(file.key, feed.customer_id, config), config.max_file_bytes)
    except BlobRefused:
        log.info("feed %s: %s is gone already", feed.id, file.key)
        return
    if version_text(size, version) != file.version:
        log.info("feed %s: %s changed since it was imported; left where it is", feed.id, file.key)
        return
    if action == "delete":
        blob.delete(file.key, feed.customer_id, config)
        log.info("feed %s: deleted %s after its import", feed.id, file.key)
    elif isinstance(action, Mapping) and "move_to" in action:
        name = file.key[len(feed.prefix_uri) :]
        target = prefixes.move(found, action["move_to"] + name, feed.customer_id, config)
        log.info("feed %s: moved %s to %s after its import", feed.id, file.key, target)
