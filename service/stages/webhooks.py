"""Webhooks (SPEC 16): when a job ends, its view is POSTed, signed, to the job's callback_url;
and a feed's events (feed.late, SPEC 20) to the feed's callback_url option.

The first delivery message is written by JobStore in the transaction that sets the job's
final status; each attempt writes one import_logs line and, after a failure, the next
attempt's delayed message in one transaction. Delivery never changes the job's row.
Deliveries have a queue and threads of their own (actors.deliveries), and connect only to
addresses service.hosts checked (SPEC 16, private hosts).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from service import hosts
from service.config import Config, CustomerSettings
from service.hosts import Resolver, under_prefixes, url_problem
from service.storage.feeds import FeedStore
from service.storage.jobs import JobStore
from service.storage.queue import (
    DELIVER_FEED_EVENT,
    DELIVER_WEBHOOK,
    WEBHOOKS_QUEUE,
    Encoded,
    delay_queue,
    delivery_message,
    feed_event_message,
)
from service.storage.views import feed_view, job_view

log = logging.getLogger(__name__)

# url_problem and under_prefixes are service.hosts' (https:// sources share them), named here too.
__all__ = ["DELIVER", "Encoded", "delivery_message", "deliver", "refusal", "under_prefixes", "url_problem"]

DELIVER = DELIVER_WEBHOOK  # the actor's name: stable, queued messages store it
DELIVER_FEED = DELIVER_FEED_EVENT
QUEUE = WEBHOOKS_QUEUE
DELAY_QUEUE = delay_queue(QUEUE)
TIMEOUT_SECONDS = 10.0  # connect, send and answer, all together
MAX_BACKOFF_SECONDS = 3600.0
MAX_URL_LENGTH = hosts.MAX_URL_LENGTH
SIGNATURE_HEADER = "X-Import-Signature"
USER_AGENT = "import-service-webhooks/1"


def refusal(
    url: str, customer_id: str, settings: CustomerSettings | None, resolve: Resolver | None = hosts.system_resolve
) -> str | None:
    """Why this customer may not use `url` as callback_url, or None when it may.

    Its host must be public (unless the customer's allow_private_hosts): an address in any
    spelling is judged as is; a name is resolved with `resolve`, for at most
    hosts.RESOLVE_TIMEOUT_SECONDS (None: not resolved here, as every connection checks it)."""
    problem = url_problem(url)
    if problem is not None:
        return f"option callback_url {problem}"
    if settings is None or not settings.webhook_prefixes:
        return f"option callback_url: customer {customer_id!r} has no webhook_prefixes configured, so no webhooks"
    if not settings.webhook_secret:
        return f"option callback_url: customer {customer_id!r} has no webhook_secret configured to sign webhooks"
    if not under_prefixes(url, settings.webhook_prefixes):
        allowed = ", ".join(settings.webhook_prefixes)
        return f"option callback_url must start with one of the customer's webhook_prefixes: {allowed}"
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or hosts.default_port(parts.scheme)
    lookup: Resolver = resolve if resolve is not None else _no_lookup
    problem = hosts.enqueue_refusal(host, port, settings.allow_private_hosts, lookup)
    if problem is not None:
        return f"option callback_url: {problem} (unless the customer's allow_private_hosts is set)"
    return None


def _no_lookup(host: str, port: int) -> list[str]:
    return []


def sign(body: bytes, secret: str) -> str:
    """The X-Import-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str) -> dict[str, str]:
    """The headers of a delivery of this body: JSON, our user agent, its signature."""
    return {"Content-Type": "application/json", "User-Agent": USER_AGENT, SIGNATURE_HEADER: sign(body, secret)}


def body_bytes(view: Mapping[str, Any], sent_at: datetime) -> bytes:
    """The request body: the job view plus sent_at (RFC 3339, UTC), serialised once."""
    stamp = sent_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({**view, "sent_at": stamp}, separators=(",", ":")).encode()


def next_delay(attempt: int, base: float, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """The wait after failed attempt number `attempt` (1, 2, ...): base, doubling, capped."""
    return float(min(cap, base * 2 ** min(attempt - 1, 40)))


@dataclass(frozen=True)
class Outcome:
    """How one POST went: delivered (a 2xx) or not, and what to log (never a secret)."""

    delivered: bool
    what: str


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float = TIMEOUT_SECONDS,
    *,
    allow_private: bool = False,
    resolve: Resolver = hosts.system_resolve,
) -> Outcome:
    """POST body to url, following no redirect; returns within `timeout` whatever the server does.

    The host is resolved once with `resolve` and the connection goes to an address checked
    there (service.hosts.connect), with the URL's name in the Host header and TLS's SNI and
    certificate check; a host that is not public (unless allow_private) is a refused attempt.

    The request runs in a helper thread that this one waits for at most `timeout`: socket
    timeouts alone would let a server dribbling a byte every few seconds (or a slow DNS
    lookup) hold the worker thread for as long as it likes. At the deadline the socket is
    shut down, which ends the helper's blocked read."""
    # The socket's own timeout is a little longer, so that the deadline is what ends a slow
    # answer (one outcome, one message), and the helper never outlives it by much.
    request = _Request(url, body, headers, timeout + 1.0, allow_private, resolve)
    helper = threading.Thread(target=request.run, name="webhook-post", daemon=True)
    helper.start()
    helper.join(timeout)
    if helper.is_alive():
        request.abort()
        return Outcome(False, f"no complete answer within {timeout:g} s")
    return request.outcome


class _Request:
    """One POST, run by a helper thread; `abort` ends it from another thread."""

    def __init__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float, allow_private: bool, resolve: Resolver
    ) -> None:
        self.url, self.body, self.headers, self.timeout = url, body, dict(headers), timeout
        self.allow_private, self.resolve = allow_private, resolve
        self.outcome = Outcome(False, "not attempted")
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = threading.Event()

    def run(self) -> None:
        try:
            self.outcome = self._post()
        except hosts.HostRefused as exc:
            self.outcome = Outcome(False, f"not connected: {exc}")
        except TimeoutError:
            self.outcome = Outcome(False, "timed out")
        except ssl.SSLError as exc:
            self.outcome = Outcome(False, f"TLS error: {exc.reason or type(exc).__name__}")
        except ConnectionRefusedError:
            self.outcome = Outcome(False, "connection refused")
        except (socket.gaierror, UnicodeError):
            self.outcome = Outcome(False, "host name not found")
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            self.outcome = Outcome(False, f"network error: {reason}")
        finally:
            if self._conn is not None:
                self._conn.close()

    def _post(self) -> Outcome:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "", parts.port or hosts.default_port(parts.scheme)
        self._conn = hosts.pinned_connection(parts.scheme, host, port, self.timeout, self.allow_private, self.resolve)
        self._conn.connect()
        if self._aborted.is_set():
            return Outcome(False, "aborted")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn.request("POST", target, body=self.body, headers=self.headers)
        status = self._conn.getresponse().status  # the body of the answer is not read
        if 200 <= status < 300:
            return Outcome(True, f"HTTP {status}")
        if 300 <= status < 400:
            return Outcome(False, f"HTTP {status}: redirect not followed")
        return Outcome(False, f"HTTP {status}")

    def abort(self) -> None:
        """Shut the socket down so that the helper's blocked send or read returns at once."""
        self._aborted.set()
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, also under TLS
            except OSError:
                pass  # already closed


def deliver(
    jobs: JobStore,
    config: Config,
    job_id: str,
    status: str,
    attempt: int = 1,
    first_at: float | None = None,
    resolve: Resolver = hosts.system_resolve,
) -> None:
    """Make one delivery attempt for the job's `status`; log it and, after a failure, queue
    the next attempt (exponential backoff) or give up once config.webhook_give_up_seconds
    have passed since the first attempt. `resolve` resolves the host, once per attempt."""
    job = jobs.get(job_id)
    if job is None:
        log.info("job %s: webhook not sent: the job no longer exists", job_id)
        return
    if job.status != status:
        # The job moved on (succeeded, then undone): that status's own delivery reports it.
        jobs.log(job_id, "info", f"webhook for status {status} not sent: the job is {job.status} now")
        return
    url = str(job.options.get("callback_url") or "")
    settings = config.customer_settings.get(job.customer_id)
    problem = refusal(url, job.customer_id, settings, resolve=None)  # the connection resolves and checks the name
    if problem is not None or settings is None or settings.webhook_secret is None:
        jobs.log(job_id, "error", f"webhook not sent: {problem or 'no webhook_secret'} (checked at delivery)")
        return
    first_at = time.time() if first_at is None else first_at
    body = body_bytes(job_view(job), datetime.now(UTC))
    outcome = post(
        url, body, signed(body, settings.webhook_secret), allow_private=settings.allow_private_hosts, resolve=resolve
    )
    _record(jobs, config, job_id, status, attempt, first_at, outcome)


def deliver_feed_event(
    feeds: FeedStore,
    config: Config,
    feed_id: str,
    event: str,
    attempt: int = 1,
    first_at: float | None = None,
    resolve: Resolver = hosts.system_resolve,
) -> None:
    """Make one delivery attempt of a feed's event (feed.late, SPEC 20) to its callback_url
    option: {"event", "feed": the feed's view, "sent_at"}, signed as job webhooks are; after a
    failure queue the next attempt (the same backoff and give-up as job webhooks). A feed that
    is no longer late (a file came) or gone is not reported."""
    feed = feeds.get(feed_id)
    if feed is None or (event == "feed.late" and not feed.late):
        log.info("feed %s: %s webhook not sent: the feed is gone or no longer late", feed_id, event)
        return
    url = str(feed.options.get("callback_url") or "")
    settings = config.customer_settings.get(feed.customer_id)
    problem = refusal(url, feed.customer_id, settings, resolve=None)
    if problem is not None or settings is None or settings.webhook_secret is None:
        log.warning("feed %s: %s webhook not sent: %s", feed_id, event, problem or "no webhook_secret")
        return
    first_at = time.time() if first_at is None else first_at
    body = body_bytes({"event": event, "feed": feed_view(feed)}, datetime.now(UTC))
    outcome = post(
        url, body, signed(body, settings.webhook_secret), allow_private=settings.allow_private_hosts, resolve=resolve
    )
    if outcome.delivered:
        log.info("feed %s: %s webhook attempt %d delivered: %s", feed_id, event, attempt, outcome.what)
        return
    delay = next_delay(attempt, config.webhook_backoff_seconds)
    if time.time() + delay > first_at + config.webhook_give_up_seconds:
        log.error("feed %s: %s webhook given up after %d attempt(s): %s", feed_id, event, attempt, outcome.what)
        return
    log.warning(
        "feed %s: %s webhook attempt %d failed: %s; next in %s", feed_id, event, attempt, outcome.what, _duration(delay)
    )
    feeds.log_event(feed_event_message(feed_id, event, attempt + 1, first_at, delay))


def _record(
    jobs: JobStore, config: Config, job_id: str, status: str, attempt: int, first_at: float, outcome: Outcome
) -> None:
    """Log the attempt; after a failure queue the next one or give up, in the same transaction."""
    if outcome.delivered:
        jobs.log_webhook(job_id, [("info", f"webhook attempt {attempt} delivered: {outcome.what}")])
        log.info("job %s: webhook attempt %d delivered: %s", job_id, attempt, outcome.what)
        return
    delay = next_delay(attempt, config.webhook_backoff_seconds)
    line = ("warning", f"webhook attempt {attempt} failed: {outcome.what}")
    log.warning("job %s: webhook attempt %d failed: %s", job_id, attempt, outcome.what)
    if time.time() + delay > first_at + config.webhook_give_up_seconds:
        given_up = f"webhook given up after {attempt} attempt(s) over {_duration(time.time() - first_at)}"
        jobs.log_webhook(job_id, [line, ("error", given_up)])
        return
    retry = delivery_message(job_id, status, attempt + 1, first_at, delay)
    jobs.log_webhook(job_id, [(line[0], f"{line[1]}; next attempt in {_duration(delay)}")], retry)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
