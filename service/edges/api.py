"""What REST and gRPC both offer, with tokens and tenants checked: the edges only translate.

Every read and write goes through `Api` with the caller's `Access`; a job of a customer the
caller may not see is reported exactly like a job that does not exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from service import logs
from service.config import CUSTOMER_ID, HASHED_PREFIX, Config
from service.errors import BlobRefused, ImportServiceError, RequestRefused
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import control, feeds, replay, uploads
from service.stages.enqueue import check_request, enqueue
from service.stages.feeds import RunResult
from service.stages.services import Services
from service.storage import rejects
from service.storage.feeds import FILE_STATES, Feed, FeedFile, FeedStore
from service.storage.jobs import Job, JobStore, LogLine
from service.storage.store import CustomerStore
from service.storage.uploads import Upload, UploadStore
from service.storage.views import reject_view

IDEMPOTENCY_KEY = re.compile(r"(?=.*\S)[^\x00-\x1f\x7f]{1,200}\Z")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "undone")
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
RECENT_FILES = 10  # files a feed's view lists (REST and gRPC)


class Unauthenticated(ImportServiceError):
    """No token, or a token that is not configured."""


class PermissionDenied(ImportServiceError):
    """The token may not act for that customer."""


class PresignUnavailable(ImportServiceError):
    """The customer's store cannot sign an upload URL (its credentials cannot): a fault of the
    configuration, not of the request."""


class JobNotFound(ImportServiceError):
    """No such job, or one the caller may not see."""


class FeedNotFound(ImportServiceError):
    """No such feed (or file of a feed), or a feed of a customer the caller may not see."""


class FeedBusy(ImportServiceError):
    """A run of the feed is in progress."""


@dataclass(frozen=True)
class Access:
    """The customers a caller may act for; None means every customer."""

    customers: frozenset[str] | None

    def allows(self, customer_id: str) -> bool:
        """Whether the caller may act for this customer."""
        return self.customers is None or customer_id in self.customers


OPERATOR = Access(None)


class Api:
    """Enqueue and read jobs on behalf of an authenticated caller."""

    def __init__(
        self, config: Config, jobs: JobStore, products: ProductRegistry, uploads: UploadStore | None = None
    ) -> None:
        self.config = config
        self.jobs = jobs
        self.products = products
        self._uploads = uploads
        self._feeds: FeedStore | None = None

    @property
    def feeds(self) -> FeedStore:
        """The app DB's feeds (SPEC 20), on the jobs' database; built on first use."""
        if self._feeds is None:
            self._feeds = FeedStore(self.jobs.dsn, maxconn=4)
        return self._feeds

    @property
    def uploads(self) -> UploadStore:
        """The app DB's uploads (SPEC 19), on the jobs' database; built on first use."""
        if self._uploads is None:
            self._uploads = UploadStore(self.jobs.dsn, maxconn=4)
        return self._uploads

    def authenticate(self, authorization: str | None) -> Access:
        """Turn an `Authorization: Bearer <token>` value into Access; fail closed (SPEC 4).

        With no token configured every call is refused, unless the configuration says
        `"auth": "off"`; a key `sha256:<hex>` in the token file matches the token whose
        SHA-256 digest it is.
        """
        if self.config.auth == "off":
            return OPERATOR
        if not self.config.tokens:
            raise Unauthenticated("no API tokens are configured on this server, so every call is refused")
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        match = None
        presented = token.strip().encode()
        digest = ("sha256:" + hashlib.sha256(presented).hexdigest()).encode()
        # Compare against every token, in constant time each, so timing reveals nothing.
        for known, customers in self.config.tokens.items():
            expected = known.lower().encode() if known.startswith(HASHED_PREFIX) else known.encode()
            candidate = digest if known.startswith(HASHED_PREFIX) else presented
            if hmac.compare_digest(candidate, expected):
                match = customers
        if match is None:
            raise Unauthenticated("unknown bearer token")
        return OPERATOR if "*" in match else Access(frozenset(match))

    def enqueue(self, access: Access, body: Any, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Validate and enqueue; (job, created). A replay of a key returns the first job."""
        if isinstance(body, Mapping) and isinstance(body.get("customer_id"), str):
            self._check_customer(access, body["customer_id"])
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise RequestRefused("Idempotency-Key must be 1 to 200 printable characters", field="idempotency_key")
        request = check_request(body, self.config, self.products, self.uploads)
        job, created = enqueue(request, self.jobs, idempotency_key)
        logs.note_request_job(job.id, job.customer_id)
        return job, created

    # -- uploads (SPEC 19) -------------------------------------------------------------------

    def create_upload(self, access: Access, length: int, metadata: Mapping[str, str]) -> Upload:
        """A new upload of `length` bytes for the customer metadata's customer_id names, or the
        one customer the token acts for."""
        customer_id = self._named_or_only_customer(access, metadata.get("customer_id"), "Upload-Metadata must name")
        kept = {key: value for key, value in metadata.items() if key != "customer_id"}
        return uploads.create(self.config, self.uploads, customer_id, length, metadata.get("filename", ""), kept)

    def upload(self, access: Access, upload_id: str) -> Upload:
        """The upload, if it exists (unexpired) and the caller may see it."""
        found = self.uploads.get(upload_id)
        if found is None or not access.allows(found.customer_id):
            raise uploads.UploadGone(f"no upload {upload_id[:60]}")
        return found

    def receive_upload(
        self,
        access: Access,
        upload_id: str,
        offset: int,
        read: Callable[[int], bytes],
        count: int | None,
        checksum: tuple[str, bytes] | None = None,
    ) -> Upload:
        """Store a request's bytes at offset (see stages.uploads.receive)."""
        found = self.upload(access, upload_id)
        return uploads.receive(self.config, self.uploads, found, offset, read, count, checksum)

    def presign(self, access: Access, body: Any) -> blob.Presigned:
        """A URL the client PUTs a file to, straight into the customer's S3, Azure or GCS area
        (whichever its "uploads" setting names), and the blob_uri to enqueue then (SPEC 19)."""
        if not isinstance(body, Mapping):
            raise RequestRefused("the request body must be a JSON object", field=None)
        unknown = sorted(set(body) - {"customer_id", "filename", "expires_in"})
        if unknown:
            raise RequestRefused(
                f"unknown field(s): {', '.join(repr(k[:40]) for k in unknown[:5])}", field=unknown[0][:60]
            )
        customer_id = self._named_or_only_customer(access, body.get("customer_id"), "the body must name")
        filename = body.get("filename")
        if not isinstance(filename, str) or not filename.strip() or len(filename) > 1024:
            raise RequestRefused("filename must be a non-empty string of at most 1,024 characters", field="filename")
        expires_in = body.get("expires_in", blob.PRESIGN_MAX_SECONDS)
        if customer_id not in self.config.customers:
            raise RequestRefused(f"unknown customer {customer_id!r}", field="customer_id")
        settings = self.config.customer_settings.get(customer_id)
        store = settings.uploads if settings is not None else "blob_root"
        if store == "blob_root":
            raise RequestRefused(
                f"the uploads of customer {customer_id!r} go to the service's own storage: send the file over "
                "tus to /uploads (presigned URLs are for a customer whose uploads setting names s3, azure or gcs)",
                field="customer_id",
            )
        try:
            return blob.presign(customer_id, filename, store, self.config, expires_in)
        except BlobRefused as exc:  # the store's credentials cannot sign: the operator's to fix
            raise PresignUnavailable(f"cannot sign an upload URL for the customer's {store} area: {exc}") from None

    def delete_upload(self, access: Access, upload_id: str) -> None:
        """Delete the upload and its bytes."""
        uploads.delete(self.config, self.uploads, self.upload(access, upload_id))

    # -- feeds (SPEC 20) ---------------------------------------------------------------------

    def create_feed(self, access: Access, body: Any) -> Feed:
        """A new feed of the customer the body names (or the token's one customer), due at once."""
        if isinstance(body, Mapping):
            body = dict(body)
            body["customer_id"] = self._named_or_only_customer(access, body.get("customer_id"), "the body must name")
        values = feeds.check_feed(body, self.config, self.products)
        values["after_success"] = feeds.check_after_success(
            values["after_success"], values["customer_id"], values["prefix_uri"], self.config
        )
        feeds.check_feed_options(
            values["options"], values["customer_id"], values["product_type"], self.config, self.products
        )
        return self.feeds.create(values)

    def feed(self, access: Access, feed_id: str) -> Feed:
        """The feed, if it exists and the caller may see it."""
        feed = self.feeds.get(feed_id)
        if feed is None or not access.allows(feed.customer_id):
            raise FeedNotFound(f"no feed {str(feed_id)[:60]}")
        return feed

    def list_feeds(self, access: Access, customer_id: str | None, limit: Any) -> list[Feed]:
        """Feeds oldest first, only of customers the caller may see (of one, when named)."""
        if customer_id is not None:
            if not CUSTOMER_ID.match(customer_id):
                raise RequestRefused(f"customer_id must match {CUSTOMER_ID.pattern}", field="customer_id")
            self._check_customer(access, customer_id)
            return self.feeds.feeds([customer_id], _limit(limit))
        return self.feeds.feeds(None if access.customers is None else sorted(access.customers), _limit(limit))

    def update_feed(self, access: Access, feed_id: str, body: Any) -> Feed:
        """Pause or resume the feed, or change its schedule, options, pattern, after_success or
        expect_every_hours; a new schedule (or a resume) sets its next run from now."""
        feed = self.feed(access, feed_id)
        changes = feeds.check_feed(body, self.config, self.products, creating=False)
        if "after_success" in changes:
            changes["after_success"] = feeds.check_after_success(
                changes["after_success"], feed.customer_id, feed.prefix_uri, self.config
            )
        if "options" in changes:
            feeds.check_feed_options(
                changes["options"], feed.customer_id, feed.product_type, self.config, self.products
            )
        next_run = None
        if "schedule" in changes or (changes.get("paused") is False and feed.paused):
            next_run = feeds.next_run(changes.get("schedule", feed.schedule))
        updated = self.feeds.update(feed.id, changes, next_run)
        if updated is None:
            raise FeedNotFound(f"no feed {feed.id}")
        return updated

    def delete_feed(self, access: Access, feed_id: str) -> None:
        """Delete the feed and its ledger; its jobs and files stay."""
        feed = self.feed(access, feed_id)
        if not self.feeds.delete(feed.id):
            raise FeedNotFound(f"no feed {feed.id}")

    def run_feed(self, access: Access, feed_id: str) -> RunResult:
        """Run the feed now (even a paused one); FeedBusy while another run is in progress."""
        feed = self.feed(access, feed_id)
        try:
            return feeds.run_now(self._services(), self.feeds, feed)
        except feeds.FeedBusy as exc:
            raise FeedBusy(str(exc)) from None
        except feeds.FeedNotFound as exc:
            raise FeedNotFound(str(exc)) from None

    def feed_files(
        self, access: Access, feed_id: str, limit: int = RECENT_FILES
    ) -> tuple[Feed, dict[str, int], list[FeedFile]]:
        """The feed, its counts of files and its latest files."""
        feed = self.feed(access, feed_id)
        return feed, self.feeds.counts(feed.id), self.feeds.files(feed.id, limit)

    def list_feed_files(
        self, access: Access, feed_id: str, state: str | None, limit: Any, after: str | None
    ) -> tuple[Feed, list[FeedFile], str | None]:
        """A page of the feed's files, newest first, only those in `state` (imported, failed,
        pending) when given, after the version `after` (the `next` of the page before): (the
        feed, its files, the `after` of the next page or None when this is the last)."""
        feed = self.feed(access, feed_id)
        if state is not None and state not in FILE_STATES:
            raise RequestRefused(f"state must be one of {', '.join(FILE_STATES)}", field="state")
        if after is not None and (
            not isinstance(after, str) or len(after) > 64 or self.feeds.file(feed.id, after) is None
        ):
            raise RequestRefused(f"after must be a version of feed {feed.id}, as a page's next names it", field="after")
        count = _limit(limit)
        files = self.feeds.files(feed.id, count + 1, state, after)
        return feed, files[:count], files[count - 1].version_id if len(files) > count else None

    def retry_feed_file(self, access: Access, feed_id: str, version_id: str) -> Job:
        """Import a failed file of the feed again: its new job."""
        feed = self.feed(access, feed_id)
        file = self.feeds.file(feed.id, version_id) if isinstance(version_id, str) and len(version_id) <= 64 else None
        if file is None:
            raise FeedNotFound(f"feed {feed.id} has no file {str(version_id)[:60]}")
        return feeds.retry(self._services(), self.feeds, feed, file)

    # -- jobs --------------------------------------------------------------------------------

    def job(self, access: Access, job_id: str) -> Job:
        """The job, if it exists and the caller may see it."""
        job = self.jobs.get(job_id)
        if job is None or not access.allows(job.customer_id):
            raise JobNotFound(f"no job {job_id}")
        logs.note_request_job(job.id, job.customer_id)  # for the access-log line (SPEC 16)
        return job

    def cancel(self, access: Access, job_id: str) -> tuple[Job, bool]:
        """Cancel a queued or running job: (job, True) once it is `cancelled`, False while it ends.

        Raises JobConflict for a job that already ended otherwise (a cancelled one answers as is).
        """
        return control.cancel(self._services(), self.job(access, job_id))

    def undo(self, access: Access, job_id: str) -> tuple[Job, bool]:
        """Undo a succeeded job: (job, True) once it is `undone`, False when a worker completes it.

        Raises JobConflict naming the later jobs to undo first, or why the job cannot be undone.
        """
        return control.undo(self._services(), self.job(access, job_id))

    def replay(self, access: Access, job_id: str) -> Job:
        """A new job that validates the job's stored rejects against the schema as it is now;
        while one is queued, running or succeeded, that one (see `replay_job`).

        Raises JobConflict when the job has not ended or has no rejects."""
        return self.replay_job(access, job_id)[0]

    def replay_job(self, access: Access, job_id: str) -> tuple[Job, bool]:
        """The job's replay and whether this call created it (SPEC 14: one at a time)."""
        return replay.request(self._services(), self.job(access, job_id))

    def rejects_page(
        self, access: Access, job_id: str, after: Any = None, limit: Any = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the job's rejected rows (views) and the `after` of the next page (None: last)."""
        job, start, count = self._rejects_request(access, job_id, after, limit)
        items = list(self._store(job).iter_rejects(job.id, start, count + 1))
        names = rejects.header_names(self.jobs.plan(job.id))
        following = items[count - 1].source_row if len(items) > count else None
        return [reject_view(item, names) for item in items[:count]], following

    def rejects_stream(self, access: Access, job_id: str, after: Any = None, limit: Any = None) -> Iterator[Any]:
        """The job's rejected rows after `after` (at most `limit`, 0 = the default), with the header names."""
        job, start, count = self._rejects_request(access, job_id, after, limit)
        names = rejects.header_names(self.jobs.plan(job.id))
        return ((item, rejects.record(item, names)) for item in self._store(job).iter_rejects(job.id, start, count))

    def rejects_csv(self, access: Access, job_id: str) -> Iterator[bytes]:
        """The job's rejects.csv as UTF-8 pieces, read as they are written (constant memory)."""
        job = self.job(access, job_id)
        store = self._store(job)
        return rejects.csv_bytes(lambda: store.iter_rejects(job.id), rejects.header_names(self.jobs.plan(job.id)))

    def _rejects_request(self, access: Access, job_id: str, after: Any, limit: Any) -> tuple[Job, int, int]:
        job = self.job(access, job_id)
        try:
            start = rejects.after_row(after)
        except (TypeError, ValueError):
            raise RequestRefused("after must be a whole number (a source_row), 0 or more", field="after") from None
        try:
            count = rejects.page_limit(limit)
        except (TypeError, ValueError):
            raise RequestRefused(f"limit must be a whole number from 1 to {rejects.MAX_PAGE}", field="limit") from None
        return job, start, count

    def _store(self, job: Job) -> CustomerStore:
        return self._services().customer(job.customer_id)

    def _services(self) -> Services:
        return Services(self.config, self.jobs, self.products, self.jobs.dsn)

    def logs(self, access: Access, job_id: str) -> list[LogLine]:
        """The job's log lines, oldest first."""
        return self.jobs.logs(self.job(access, job_id).id)

    def list_jobs(self, access: Access, customer_id: str | None, status: str | None, limit: Any) -> list[Job]:
        """Jobs newest first, only of customers the caller may see."""
        if customer_id is not None:
            if not CUSTOMER_ID.match(customer_id):
                raise RequestRefused(f"customer_id must match {CUSTOMER_ID.pattern}", field="customer_id")
            self._check_customer(access, customer_id)
        if status is not None and status not in STATUSES:
            raise RequestRefused(f"status must be one of {', '.join(STATUSES)}", field="status")
        count = _limit(limit)
        customers = None if access.customers is None else sorted(access.customers)
        return self.jobs.list_jobs(customers, customer_id, status, count)

    def _named_or_only_customer(self, access: Access, given: Any, where: str) -> str:
        """The customer a request names (customer_id), else the one customer its token acts for;
        refused naming customer_id when neither holds, or the token may not act for it."""
        if given is None:
            if access.customers is None or len(access.customers) != 1:
                raise RequestRefused(f"{where} customer_id: this token acts for several customers", field="customer_id")
            (given,) = access.customers
        if not isinstance(given, str) or not CUSTOMER_ID.match(given):
            raise RequestRefused(f"customer_id must match {CUSTOMER_ID.pattern}", field="customer_id")
        self._check_customer(access, given)
        return str(given)

    def _check_customer(self, access: Access, customer_id: str) -> None:
        if not access.allows(customer_id):
            raise PermissionDenied(f"this token may not act for customer {customer_id!r}")


def _limit(value: Any) -> int:
    """Parse a list limit: a whole number from 1 to MAX_LIST_LIMIT."""
    if value is None or value == "":
        return DEFAULT_LIST_LIMIT
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RequestRefused(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}", field="limit") from None
    if isinstance(value, bool) or not 1 <= number <= MAX_LIST_LIMIT:
        raise RequestRefused(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}", field="limit")
    return number
