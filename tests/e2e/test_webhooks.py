"""Webhooks end to end (SPEC 16): real gunicorn, real `dramatiq actors` workers, real Postgres,
and a local HTTP receiver on 127.0.0.1 that records every request's raw body and headers.

The workers back off 0.5 s (doubling) and give up 8 s after the first attempt, so that
retries, a redirect and a slow endpoint end within seconds."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2.extras
import pytest

from service.config import Config, load_customers
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import EnqueueRequest, check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import JobStore
from tests.conftest import Databases, http_server
from tests.e2e.conftest import TOKENS, USERS_CSV, Stack, stop
from tests.integration.conftest import pipeline_env, start_workers, stop_workers

SECRET = "whsec-e2e-4b1f9a"
BACKOFF, GIVE_UP = 0.5, 8.0
DELIVERY_TIMEOUT = 25.0


@dataclass
class Hit:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers 200 unless a path is scripted: a list of statuses, 'slow' or a redirect."""

    base: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"{self.base}/hooks/{name}/{uuid.uuid4().hex[:8]}"

    def to(self, url: str) -> list[Hit]:
        path = urlsplit(url).path
        with self.lock:
            return [hit for hit in self.hits if hit.path == path]

    def wait(self, url: str, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.to(url)) >= count:
                return self.to(url)
            time.sleep(0.1)
        raise AssertionError(f"{url}: {len(self.to(url))} requests, expected {count}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with state.lock:
                state.hits.append(Hit(self.command, self.path, dict(self.headers), body))
                steps = state.script.get(self.path, [])
                step = steps.pop(0) if steps else 200
            if step == "slow":
                time.sleep(30)
                step = 200
            if isinstance(step, str):  # a redirect to that path
                self.send_response(302)
                self.send_header("Location", step)
            else:
                self.send_response(step)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        state.base = base
        yield state


@dataclass
class Env:
    """The running stack: REST base URL, app DSN, and a way to put blobs."""

    stack: Stack
    base_url: str
    config: Config


# initech may call back only public hosts; each URL below passes its prefixes, so what refuses
# it is the host alone.
PRIVATE_HOSTS = ["127.0.0.1", "127.1", "localhost", "[::1]", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]"]


def start_env(
    databases: Databases, tmp: Path, customers: dict[str, Any], threads: int = 2, **settings: str
) -> Iterator[Env]:
    """Databases for these customers (entries of the customer map, "dsn" filled in here), a
    token file, one `dramatiq actors` process with this many threads, and a real gunicorn."""
    app = databases.create("app")
    dsns = {name: databases.create(name) for name in customers}
    root = tmp / "blobs"
    for name in customers:
        (root / name).mkdir(parents=True)
    map_path = tmp / "customer_map.json"
    map_path.write_text(json.dumps({name: {**entry, "dsn": dsns[name]} for name, entry in customers.items()}))
    (tmp / "tokens.json").write_text(json.dumps(TOKENS))
    variables = pipeline_env(
        app,
        map_path,
        root,
        API_TOKENS_PATH=str(tmp / "tokens.json"),
        WORKER_CONCURRENCY=str(threads),
        WEBHOOK_BACKOFF_SECONDS=str(BACKOFF),
        WEBHOOK_GIVE_UP_SECONDS=str(GIVE_UP),
        **settings,
    )
    stack = Stack(variables, app, dsns, root, tmp)
    workers = start_workers(variables, threads=threads)
    try:
        _, base_url = stack.gunicorn()
        known, customer_settings = load_customers(map_path)
        config = Config(app_db_dsn=app, blob_root=root.resolve(), customers=known, customer_settings=customer_settings)
        yield Env(stack, base_url, config)
    finally:
        stop_workers(workers)
        for process in stack.processes:
            stop(process)


@pytest.fixture(scope="module")
def env(databases: Databases, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Env]:
    port = urlsplit(receiver.base).port
    hooks = {"webhook_prefixes": [f"{receiver.base}/hooks/", f"http://localhost:{port}/hooks/"]}
    customers = {
        # The receiver is on 127.0.0.1: acme may call back private hosts.
        "acme": {**hooks, "webhook_secret": SECRET, "allow_private_hosts": True},
        "globex": {},
        "initech": {
            "webhook_prefixes": [f"http://{host}:{port}/hooks/" for host in PRIVATE_HOSTS]
            + ["http://169.254.169.254/hooks/"],
            "webhook_secret": SECRET,
        },
    }
    yield from start_env(databases, tmp_path_factory.mktemp("webhooks"), customers)


def call(env: Env, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(urlsplit(env.base_url).netloc, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Authorization": "Bearer tok-admin"}
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def submit(env: Env, url: str, customer: str = "acme", content: str = USERS_CSV, **options: Any) -> tuple[int, Any]:
    path = env.stack.blob(customer, f"{uuid.uuid4().hex[:8]}.csv", content)
    body = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(path)}
    return call(env, "POST", "/enqueue", {**body, "options": {"callback_url": url, **options}})


def run(env: Env, url: str, **options: Any) -> dict[str, Any]:
    """Enqueue a job with this callback_url through REST and wait for it to end; its view."""
    status, answer = submit(env, url, **options)
    assert status == 202, answer
    return wait_status(env, answer["job_id"], ("succeeded", "failed", "cancelled", "undone"))


def wait_status(env: Env, job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, view = call(env, "GET", f"/jobs/{job_id}")
        if view["status"] in statuses:
            return dict(view)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is still {view['status']}")


def webhook_lines(env: Env, job_id: str) -> list[tuple[str, str]]:
    _, logs = call(env, "GET", f"/jobs/{job_id}/logs")
    return [(line["level"], line["message"]) for line in logs["logs"] if "webhook" in line["message"]]


def wait_lines(env: Env, job_id: str, last: str, timeout: float = DELIVERY_TIMEOUT) -> list[tuple[str, str]]:
    """The job's webhook lines, once one contains `last`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = webhook_lines(env, job_id)
        if any(last in message for _, message in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no webhook line with {last!r}: {webhook_lines(env, job_id)}")


def job_row(env: Env, job_id: str) -> dict[str, Any]:
    conn = psycopg2.connect(env.stack.app_dsn)
    try:
        with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT * FROM import_jobs WHERE id = %s", (job_id,))
            return dict(cur.fetchone())
    finally:
        conn.close()


def verified(hit: Hit) -> dict[str, Any]:
    """The body of a delivery, after checking its signature over the raw bytes and its headers."""
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["X-Import-Signature"], expected)
    assert hit.method == "POST" and hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"].startswith("import-service-webhooks/")
    return dict(json.loads(hit.body))


def test_a_succeeded_job_posts_its_view_once_signed_over_the_raw_body_with_a_recent_sent_at(
    env: Env, receiver: Receiver
) -> None:
    url = receiver.url("ok")
    view = run(env, url)
    assert view["status"] == "succeeded"
    (hit,) = receiver.wait(url, 1)
    body = verified(hit)
    sent_at = datetime.fromisoformat(body.pop("sent_at"))
    assert sent_at.tzinfo is not None and abs(datetime.now(UTC) - sent_at) < timedelta(seconds=60)
    assert body == view  # exactly GET /jobs/{id}'s fields and values
    assert body["options"]["callback_url"] == url
    assert wait_lines(env, view["job_id"], "delivered") == [("info", "webhook attempt 1 delivered: HTTP 200")]
    time.sleep(1.5)  # a second delivery would have come by now
    assert len(receiver.to(url)) == 1
    assert SECRET not in json.dumps(call(env, "GET", f"/jobs/{view['job_id']}/logs")[1])


def test_a_late_feed_posts_one_signed_feed_late_event_and_shows_in_the_metrics(env: Env, receiver: Receiver) -> None:
    """SPEC 20: a feed that found no new file for expect_every_hours posts feed.late (signed
    like job webhooks) to the feed's callback_url, once, and import_feed_late{feed} is 1."""
    url = receiver.url("late")
    folder = env.stack.blob_root / "acme" / "quiet-feed"
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "customer_id": "acme",
        "product_type": "users",
        "prefix_uri": folder.as_uri(),
        "schedule": {"every_seconds": 10},
        "expect_every_hours": 0.001,  # 3.6 s
        "options": {"callback_url": url},
    }
    status, feed = call(env, "POST", "/feeds", body)
    assert status == 201, feed
    (hit,) = receiver.wait(url, 1, timeout=60)
    event = verified(hit)
    assert event["event"] == "feed.late" and event["feed"]["feed_id"] == feed["feed_id"] and event["feed"]["late"]
    assert "sent_at" in event
    time.sleep(12)  # another sweep or two: still one event while it stays late
    assert len(receiver.to(url)) == 1
    with urllib.request.urlopen(f"{env.base_url}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    assert f'import_feed_late{{customer="acme",feed="{feed["feed_id"]}"}} 1.0' in metrics
    assert f'import_feed_files_seen_total{{customer="acme",feed="{feed["feed_id"]}"}} 0.0' in metrics


def test_a_failed_job_posts_its_failed_view_once(env: Env, receiver: Receiver) -> None:
    url = receiver.url("failed")
    view = run(env, url, on_invalid="fail")
    assert view["status"] == "failed"
    (hit,) = receiver.wait(url, 1)
    body = verified(hit)
    assert body["status"] == "failed" and body["error"] == view["error"] and body["job_id"] == view["job_id"]
    wait_lines(env, view["job_id"], "delivered")
    assert len(receiver.to(url)) == 1


def test_a_cancelled_job_posts_its_cancelled_view_once(env: Env, receiver: Receiver) -> None:
    url = receiver.url("cancelled")
    path = env.stack.blob("acme", f"{uuid.uuid4().hex[:8]}.csv")
    held = lambda actor, args: ("held", *dispatch(actor, args)[1:])  # noqa: E731  (no worker reads "held")
    jobs = JobStore(env.stack.app_dsn, dispatch=held, maxconn=1)
    try:
        body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
        request = check_request(
            {**body, "options": {"callback_url": url}}, env.config, ProductRegistry.load(env.config.schemas_dir)
        )
        job, _ = enqueue(request, jobs)
    finally:
        jobs.close()
    status, view = call(env, "POST", f"/jobs/{job.id}/cancel")
    assert (status, view["status"]) == (200, "cancelled")
    (hit,) = receiver.wait(url, 1)
    assert verified(hit)["status"] == "cancelled"
    wait_lines(env, job.id, "delivered")
    assert len(receiver.to(url)) == 1


def test_an_undone_job_posts_its_undone_view_after_its_succeeded_one(env: Env, receiver: Receiver) -> None:
    url = receiver.url("undone")
    view = run(env, url)
    receiver.wait(url, 1)
    status, undone = call(env, "POST", f"/jobs/{view['job_id']}/undo")
    assert (status, undone["status"]) == (200, "undone")
    first, second = receiver.wait(url, 2)
    assert verified(first)["status"] == "succeeded"
    body = verified(second)
    assert body["status"] == "undone" and body["undone_at"] == undone["undone_at"]
    time.sleep(1.5)
    assert len(receiver.to(url)) == 2


def test_two_500s_then_a_200_make_three_attempts_three_log_lines_and_leave_the_job_alone(
    env: Env, receiver: Receiver
) -> None:
    url = receiver.url("flaky")
    receiver.script[urlsplit(url).path] = [500, 500]
    view = run(env, url)
    before = job_row(env, view["job_id"])
    hits = receiver.wait(url, 3)
    lines = wait_lines(env, view["job_id"], "delivered")
    assert [level for level, _ in lines] == ["warning", "warning", "info"]
    assert lines[0][1].startswith("webhook attempt 1 failed: HTTP 500; next attempt in 0.5 s")
    assert lines[1][1].startswith("webhook attempt 2 failed: HTTP 500; next attempt in 1 s")
    assert lines[2][1] == "webhook attempt 3 delivered: HTTP 200"
    bodies = [verified(hit) for hit in hits]  # each attempt signed anew, with its own time
    assert len({body["sent_at"] for body in bodies}) == 3
    assert {body["status"] for body in bodies} == {"succeeded"}
    assert job_row(env, view["job_id"]) == before
    assert call(env, "GET", f"/jobs/{view['job_id']}")[1] == view


def test_a_redirect_is_never_followed_each_attempt_is_logged_and_the_job_is_left_alone(
    env: Env, receiver: Receiver
) -> None:
    url = receiver.url("moved")
    elsewhere = receiver.url("elsewhere")
    receiver.script[urlsplit(url).path] = [urlsplit(elsewhere).path] * 20
    view = run(env, url)
    before = job_row(env, view["job_id"])
    lines = wait_lines(env, view["job_id"], "given up")
    attempts = lines[:-1]
    assert len(attempts) >= 2 and all(level == "warning" for level, _ in attempts)
    assert all("HTTP 302: redirect not followed" in message for _, message in attempts)
    assert lines[-1][0] == "error" and f"given up after {len(attempts)} attempt(s)" in lines[-1][1]
    assert len(receiver.to(url)) == len(attempts)
    assert receiver.to(elsewhere) == []
    assert job_row(env, view["job_id"]) == before


def test_an_endpoint_that_never_answers_ends_the_attempt_within_10_s_and_leaves_the_job_alone(
    env: Env, receiver: Receiver
) -> None:
    url = receiver.url("slow")
    receiver.script[urlsplit(url).path] = ["slow"] * 5
    view = run(env, url)
    before = job_row(env, view["job_id"])
    lines = wait_lines(env, view["job_id"], "webhook attempt 1 failed")
    assert lines[0] == ("warning", "webhook attempt 1 failed: no complete answer within 10 s")
    _, logs = call(env, "GET", f"/jobs/{view['job_id']}/logs")
    logged_at = next(datetime.fromisoformat(line["at"]) for line in logs["logs"] if "attempt 1" in line["message"])
    # The attempt began right after the job ended; its line was written at the deadline, not 30 s later.
    assert logged_at - datetime.fromisoformat(view["finished_at"]) < timedelta(seconds=16)
    assert job_row(env, view["job_id"]) == before


@pytest.mark.parametrize(
    "customer, url, rule",
    [
        ("acme", "http://127.0.0.1:1/elsewhere/x", "webhook_prefixes"),
        ("acme", "ftp://127.0.0.1/hooks/x", "http:// or https://"),
        ("acme", "http://user:pass@127.0.0.1/hooks/x", "credentials"),
        ("globex", "RECEIVER/hooks/x", "no webhook_prefixes"),
    ],
)
def test_a_bad_callback_url_is_answered_400_naming_the_option(
    env: Env, receiver: Receiver, customer: str, url: str, rule: str
) -> None:
    status, answer = submit(env, url.replace("RECEIVER", receiver.base), customer=customer)
    assert status == 400
    assert answer["error"]["field"] == "options.callback_url" and rule in answer["error"]["message"]


# -- private hosts (SPEC 16) ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "localhost", "[::1]", "2130706433", "169.254.169.254"])
def test_a_callback_to_a_private_host_in_any_spelling_is_answered_400_naming_the_option(
    env: Env, receiver: Receiver, host: str
) -> None:
    port = "" if host == "169.254.169.254" else f":{urlsplit(receiver.base).port}"
    status, answer = submit(env, f"http://{host}{port}/hooks/x", customer="initech")
    assert status == 400, answer
    assert answer["error"]["field"] == "options.callback_url"
    message = answer["error"]["message"]
    kind = "link-local" if host == "169.254.169.254" else "loopback"
    assert f"host {host.strip('[]')} " in message and f"a {kind} address" in message, message


def test_a_customer_with_allow_private_hosts_is_called_back_on_a_name_that_resolves_to_loopback(
    env: Env, receiver: Receiver
) -> None:
    url = receiver.url("by-name").replace("127.0.0.1", "localhost")
    view = run(env, url)
    (hit,) = receiver.wait(url, 1)
    assert verified(hit)["job_id"] == view["job_id"]
    assert hit.headers["Host"] == urlsplit(url).netloc  # the name, though the socket went to 127.0.0.1
    wait_lines(env, view["job_id"], "delivered")


def test_a_name_that_resolves_to_loopback_at_delivery_is_never_connected_to_and_each_refusal_is_logged(
    env: Env, receiver: Receiver
) -> None:
    # As if localhost had resolved to a public address when the job was enqueued (DNS
    # rebinding): the job is written without the enqueue check, and the worker's own lookup
    # at each attempt finds 127.0.0.1.
    url = receiver.url("rebound").replace("127.0.0.1", "localhost")
    path = env.stack.blob("initech", f"{uuid.uuid4().hex[:8]}.csv")
    jobs = JobStore(env.stack.app_dsn, dispatch=dispatch, maxconn=1)
    try:
        job, _ = enqueue(EnqueueRequest("initech", "users", blob.uri_for(path), {"callback_url": url}), jobs)
    finally:
        jobs.close()
    view = wait_status(env, job.id, ("succeeded",))
    before = job_row(env, job.id)
    lines = wait_lines(env, job.id, "given up")
    attempts = lines[:-1]
    assert len(attempts) >= 2 and all(level == "warning" for level, _ in attempts)
    refused = "failed: not connected: host localhost resolves to a loopback address"
    assert all(refused in message for _, message in attempts), attempts
    assert lines[-1][0] == "error" and f"given up after {len(attempts)} attempt(s)" in lines[-1][1]
    assert receiver.to(url) == []
    assert job_row(env, job.id) == before and view["status"] == "succeeded"
