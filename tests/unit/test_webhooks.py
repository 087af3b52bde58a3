"""Webhooks without a database: URL rules, signing, the queued message, the bounded POST and
what one delivery attempt logs and queues (against a recording stand-in for JobStore)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import dramatiq
import pytest
from dramatiq.common import dq_name
from dramatiq_pg.utils import tidy4json

from service.config import Config, CustomerSettings
from service.stages import webhooks
from service.stages.messages import JOBS_QUEUE
from service.storage.jobs import Job
from service.storage.queue import QUEUES, WEBHOOKS_QUEUE
from tests.conftest import http_server

SECRET = "s3cr3t-webhook-key"
JOB_ID = "0b6f1c3e-0000-4000-8000-000000000001"


# -- URL rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("hooks.example.com/x", "http:// or https://"),
        ("https://user:pass@hooks.example.com/x", "credentials"),
        ("https://user@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com:99999/x", "port"),
        ("https://hooks.example.com:http/x", "port"),
        ("https:///x", "host"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/\r\nX-Evil: 1", "spaces"),
        ("https://hooks.example.com/" + "a" * 2048, "2048"),
        ("https://hooks.example.com/imports/../admin", ". or .."),
        ("https://hooks.example.com/imports/%2e%2e/admin", ". or .."),
        ("https://hooks.example.com/imports/./x", ". or .."),
        ("https://hooks.example.com/imports/..%5cadmin", ". or .."),
    ],
)
def test_a_url_that_can_never_be_a_callback_is_refused_saying_why(url: str, problem: str) -> None:
    found = webhooks.url_problem(url)
    assert found is not None and problem in found


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/hooks/a", "HTTPS://hooks.example.com", "https://[::1]/x?y=1"])
def test_plain_http_and_https_urls_are_fine(url: str) -> None:
    assert webhooks.url_problem(url) is None


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://hooks.example.com/acme/done", True),
        ("https://hooks.example.com/acme/", True),
        ("https://hooks.example.com/other/done", False),
        ("http://hooks.example.com/acme/done", False),
        ("https://api.example.com", True),
        ("https://api.example.com/", True),
        ("https://api.example.com?x=1", True),
        ("https://api.example.com.evil.net/", False),
        ("https://api.example.com:8443/", False),
    ],
)
def test_a_prefix_without_a_path_covers_only_its_own_host(url: str, allowed: bool) -> None:
    prefixes = ("https://hooks.example.com/acme/", "https://api.example.com")
    assert webhooks.under_prefixes(url, prefixes) is allowed


def public(host: str, port: int) -> list[str]:
    """A resolver that answers a public address for every name (no DNS in unit tests)."""
    return ["93.184.216.34"]


def test_a_customer_needs_prefixes_and_a_secret_for_any_callback() -> None:
    url = "https://hooks.example.com/acme/x"
    assert "no webhook_prefixes" in str(webhooks.refusal(url, "acme", None, public))
    assert "no webhook_prefixes" in str(webhooks.refusal(url, "acme", CustomerSettings(webhook_secret=SECRET), public))
    no_secret = CustomerSettings(webhook_prefixes=("https://hooks.example.com/acme/",))
    assert "no webhook_secret" in str(webhooks.refusal(url, "acme", no_secret, public))
    both = CustomerSettings(webhook_prefixes=("https://hooks.example.com/acme/",), webhook_secret=SECRET)
    assert webhooks.refusal(url, "acme", both, public) is None
    outside = webhooks.refusal("https://hooks.example.com/globex/x", "acme", both, public)
    assert outside is not None and "webhook_prefixes" in outside and SECRET not in outside


# -- what is sent ---------------------------------------------------------------------------


def test_the_signature_is_the_hmac_sha256_of_the_exact_body_bytes() -> None:
    body = webhooks.body_bytes({"job_id": JOB_ID, "status": "succeeded"}, datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.sign(body, SECRET) == f"sha256={expected}"
    assert webhooks.sign(body + b" ", SECRET) != f"sha256={expected}"
    assert json.loads(body) == {"job_id": JOB_ID, "status": "succeeded", "sent_at": "2024-05-01T12:00:00.000Z"}


def test_the_first_delivery_message_is_what_dramatiq_would_encode_for_the_webhook_queue() -> None:
    queue, message_id, encoded = webhooks.delivery_message(JOB_ID, "failed")
    decoded = dramatiq.Message(**encoded)
    assert queue == webhooks.QUEUE == WEBHOOKS_QUEUE == decoded.queue_name != JOBS_QUEUE
    assert message_id == decoded.message_id and tidy4json(decoded) == encoded
    assert decoded.actor_name == "deliver_webhook" and list(decoded.args) == [JOB_ID, "failed", 1, None]
    assert "eta" not in decoded.options


def test_a_retry_goes_to_the_delay_queue_with_its_eta() -> None:
    before = int(time.time() * 1000)
    queue, _, encoded = webhooks.delivery_message(JOB_ID, "failed", 3, 1_700_000_000.5, delay_seconds=120)
    decoded = dramatiq.Message(**encoded)
    assert queue == dq_name(WEBHOOKS_QUEUE) == decoded.queue_name
    assert before + 120_000 <= decoded.options["eta"] <= time.time() * 1000 + 120_000
    assert list(decoded.args) == [JOB_ID, "failed", 3, 1_700_000_000.5]


def test_every_queue_name_fits_dramatiq_pgs_notify_channel() -> None:
    # dramatiq-pg notifies on `dramatiq.<queue>.DQ.enqueue`, at most 63 bytes.
    assert WEBHOOKS_QUEUE in QUEUES and len(set(QUEUES)) == 3
    assert all(len(f"dramatiq.{q}.DQ.enqueue".encode()) <= 63 for q in QUEUES)


def test_the_backoff_doubles_from_its_base_and_stops_at_an_hour() -> None:
    assert [webhooks.next_delay(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert webhooks.next_delay(8, 30) == 3600 and webhooks.next_delay(500, 30) == 3600


# -- the POST ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local HTTP server whose answers a test scripts; it records every request."""

    answers: list[int] = field(default_factory=list)
    sleep: float = 0.0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, dict(self.headers), body))
            time.sleep(state.sleep)
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        state.url = base + "/hooks/acme"
        yield state


def test_a_2xx_is_delivered_with_the_body_and_headers_as_given(receiver: Receiver) -> None:
    outcome = webhooks.post(
        receiver.url + "?k=1", b'{"a":1}', {"Content-Type": "application/json", "X-A": "b"}, allow_private=True
    )
    assert outcome == webhooks.Outcome(True, "HTTP 200")
    path, headers, body = receiver.requests[0]
    assert (path, body, headers["X-A"], headers["Content-Type"]) == (
        "/hooks/acme?k=1",
        b'{"a":1}',
        "b",
        "application/json",
    )


def test_a_500_is_a_failed_attempt(receiver: Receiver) -> None:
    receiver.answers = [500]
    assert webhooks.post(receiver.url, b"{}", {}, allow_private=True) == webhooks.Outcome(False, "HTTP 500")


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.answers = [302]
    assert webhooks.post(receiver.url, b"{}", {}, allow_private=True) == webhooks.Outcome(
        False, "HTTP 302: redirect not followed"
    )
    assert [path for path, _, _ in receiver.requests] == ["/hooks/acme"]


def test_a_refused_connection_is_a_failed_attempt() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = webhooks.post(f"http://127.0.0.1:{port}/x", b"{}", {}, allow_private=True)
    assert outcome == webhooks.Outcome(False, "connection refused")


def test_a_server_dribbling_its_answer_cannot_hold_the_thread_past_the_deadline() -> None:
    # Each byte comes before any socket timeout would fire; only the overall deadline ends it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def dribble() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=dribble, daemon=True).start()
    started = time.monotonic()
    try:
        outcome = webhooks.post(
            f"http://127.0.0.1:{listener.getsockname()[1]}/x", b"{}", {}, timeout=1.5, allow_private=True
        )
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 3.0
    assert outcome == webhooks.Outcome(False, "no complete answer within 1.5 s")


# -- one delivery attempt ---------------------------------------------------------------------


@dataclass
class Recorder:
    """Stands in for JobStore: serves one job and records what a delivery writes."""

    job: Job | None
    lines: list[tuple[str, str]] = field(default_factory=list)
    retries: list[webhooks.Encoded] = field(default_factory=list)

    def get(self, job_id: str) -> Job | None:
        return self.job

    def log(self, job_id: str, level: str, message: str) -> None:
        self.lines.append((level, message))

    def log_webhook(self, job_id: str, lines: list[tuple[str, str]], retry: webhooks.Encoded | None = None) -> None:
        self.lines.extend(lines)
        if retry is not None:
            self.retries.append(retry)


def a_job(url: str, status: str = "succeeded") -> Job:
    now = datetime.now(UTC)
    counts = dict.fromkeys(
        (
            "rows_total",
            "rows_valid",
            "rows_invalid",
            "rows_inserted",
            "rows_updated",
            "rows_unchanged",
            "rows_duplicate",
            "rows_deleted",
            "chunks_done",
            "logged_errors",
        ),
        0,
    )
    return Job(
        id=JOB_ID,
        customer_id="acme",
        product_type="users",
        blob_uri="file:///x.csv",
        options={"callback_url": url},
        status=status,
        error=None,
        created_at=now,
        started_at=now,
        finished_at=now,
        updated_at=now,
        plan=None,
        chunks_total=None,
        idempotency_key=None,
        **counts,
    )


def config_for(
    url: str,
    secret: str | None = SECRET,
    backoff: float = 30.0,
    give_up: float = 86_400.0,
    allow_private: bool = True,  # the receiver is on 127.0.0.1
) -> Config:
    prefix = url.rsplit("/", 1)[0] + "/"
    settings = {"acme": CustomerSettings((prefix,), secret, allow_private_hosts=allow_private)}
    return Config(customer_settings=settings, webhook_backoff_seconds=backoff, webhook_give_up_seconds=give_up)


def test_a_delivered_attempt_logs_one_info_line_and_queues_nothing(receiver: Receiver) -> None:
    jobs = Recorder(a_job(receiver.url))
    webhooks.deliver(jobs, config_for(receiver.url), JOB_ID, "succeeded")  # type: ignore[arg-type]
    assert jobs.lines == [("info", "webhook attempt 1 delivered: HTTP 200")] and jobs.retries == []
    _, headers, body = receiver.requests[0]
    assert headers["X-Import-Signature"] == webhooks.sign(body, SECRET)
    assert headers["User-Agent"] == webhooks.USER_AGENT
    assert SECRET not in repr(jobs.lines)


def test_a_failed_attempt_logs_a_warning_and_queues_the_next_with_the_doubled_backoff(receiver: Receiver) -> None:
    receiver.answers = [503]
    jobs = Recorder(a_job(receiver.url))
    webhooks.deliver(jobs, config_for(receiver.url, backoff=30), JOB_ID, "succeeded", 3, time.time() - 5)  # type: ignore[arg-type]
    assert jobs.lines == [("warning", "webhook attempt 3 failed: HTTP 503; next attempt in 2 min")]
    ((queue, _, message),) = jobs.retries
    assert queue == webhooks.DELAY_QUEUE and message["args"][:3] == [JOB_ID, "succeeded", 4]


def test_a_delivery_gives_up_when_the_next_attempt_would_fall_after_the_give_up_age(receiver: Receiver) -> None:
    receiver.answers = [500]
    jobs = Recorder(a_job(receiver.url))
    first = time.time() - 86_000
    webhooks.deliver(jobs, config_for(receiver.url, backoff=3600), JOB_ID, "succeeded", 20, first)  # type: ignore[arg-type]
    assert [level for level, _ in jobs.lines] == ["warning", "error"] and jobs.retries == []
    assert "given up after 20 attempt(s)" in jobs.lines[1][1]


def test_a_secret_removed_from_the_config_stops_the_delivery_with_an_error_line(receiver: Receiver) -> None:
    jobs = Recorder(a_job(receiver.url))
    webhooks.deliver(jobs, config_for(receiver.url, secret=None), JOB_ID, "succeeded")  # type: ignore[arg-type]
    assert receiver.requests == [] and jobs.retries == []
    assert [level for level, _ in jobs.lines] == ["error"] and "webhook_secret" in jobs.lines[0][1]


def test_a_url_no_longer_under_the_prefixes_is_not_called(receiver: Receiver) -> None:
    jobs = Recorder(a_job(receiver.url))
    moved = config_for("https://hooks.example.com/acme/x")
    webhooks.deliver(jobs, moved, JOB_ID, "succeeded")  # type: ignore[arg-type]
    assert receiver.requests == [] and jobs.retries == []
    assert [level for level, _ in jobs.lines] == ["error"] and "webhook_prefixes" in jobs.lines[0][1]


def test_a_delivery_for_a_status_the_job_has_left_is_not_sent(receiver: Receiver) -> None:
    jobs = Recorder(a_job(receiver.url, status="undone"))
    webhooks.deliver(jobs, config_for(receiver.url), JOB_ID, "succeeded")  # type: ignore[arg-type]
    assert receiver.requests == [] and jobs.retries == []
    assert jobs.lines == [("info", "webhook for status succeeded not sent: the job is undone now")]


# -- private hosts at delivery (SPEC 16; the rules: test_webhooks_private_hosts.py) ---------


def name_url(receiver: Receiver) -> str:
    """The receiver's URL with a name in place of 127.0.0.1 (the tests' resolvers map it)."""
    return receiver.url.replace("127.0.0.1", "hooks.acme.test")


def test_the_post_connects_to_the_checked_address_with_the_names_host_header(receiver: Receiver) -> None:
    asked: list[str] = []

    def resolve(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["127.0.0.1"]

    url = name_url(receiver)
    outcome = webhooks.post(url, b"{}", {}, allow_private=True, resolve=resolve)
    assert outcome == webhooks.Outcome(True, "HTTP 200")
    _, headers, _ = receiver.requests[0]
    assert headers["Host"] == url.split("/")[2] and asked == ["hooks.acme.test"]


def test_a_name_that_rebinds_to_loopback_after_enqueue_is_refused_at_delivery_and_logged(receiver: Receiver) -> None:
    # DNS rebinding: public when the request is checked, loopback when the worker connects.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    asked: list[str] = []

    def rebinding(name: str, port: int) -> list[str]:
        asked.append(name)
        return next(answers)

    url = name_url(receiver)
    config = config_for(url, allow_private=False)
    assert webhooks.refusal(url, "acme", config.customer_settings["acme"], rebinding) is None
    jobs = Recorder(a_job(url))
    webhooks.deliver(jobs, config, JOB_ID, "succeeded", resolve=rebinding)  # type: ignore[arg-type]
    assert receiver.requests == [] and len(asked) == 2  # one lookup per check, none behind our back
    ((level, line),) = jobs.lines
    assert level == "warning" and line.startswith(
        "webhook attempt 1 failed: not connected: host hooks.acme.test resolves to a loopback address"
    )
    assert line.endswith("next attempt in 30 s") and len(jobs.retries) == 1  # retried like any failure


def test_a_literal_private_callback_refused_at_delivery_is_an_error_line_and_not_sent(receiver: Receiver) -> None:
    # allow_private_hosts was removed from the config after the job was enqueued.
    jobs = Recorder(a_job(receiver.url))
    webhooks.deliver(jobs, config_for(receiver.url, allow_private=False), JOB_ID, "succeeded")  # type: ignore[arg-type]
    assert receiver.requests == [] and jobs.retries == []
    ((level, line),) = jobs.lines
    assert level == "error" and "host 127.0.0.1 is a loopback address" in line and "checked at delivery" in line
