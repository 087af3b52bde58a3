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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import psycopg2.extras
import pytest

from service import blob
from service.config import Config, load_customers
from service.jobs import JobStore
from service.messages import dispatch
from service.products import ProductRegistry
from service.requests import check_request, enqueue
from tests.conftest import Databases, http_server
from tests.e2e.conftest import USERS_CSV, Stack, stop
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


@pytest.fixture(scope="module")
def env(databases: Databases, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Env]:
    app = databases.create("app")
    acme, globex = databases.create("acme"), databases.create("globex")
    tmp = tmp_path_factory.mktemp("webhooks")
    root = tmp / "blobs"
    for customer in ("acme", "globex"):
        (root / customer).mkdir(parents=True)
    hooks = {"dsn": acme, "webhook_prefixes": [f"{receiver.base}/hooks/"], "webhook_secret": SECRET}
    map_path = tmp / "customer_map.json"
    map_path.write_text(json.dumps({"acme": hooks, "globex": globex}))
    variables = pipeline_env(
        app,
        map_path,
        root,
        WORKER_CONCURRENCY="2",
        WEBHOOK_BACKOFF_SECONDS=str(BACKOFF),
        WEBHOOK_GIVE_UP_SECONDS=str(GIVE_UP),
    )
    stack = Stack(variables, app, {"acme": acme, "globex": globex}, root, tmp)
    workers = start_workers(variables)
    try:
        _, base_url = stack.gunicorn()
        customers, settings = load_customers(map_path)
        config = Config(app_db_dsn=app, blob_root=root.resolve(), customers=customers, customer_settings=settings)
        yield Env(stack, base_url, config)
    finally:
        stop_workers(workers)
        for process in stack.processes:
            stop(process)


def call(env: Env, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(urlsplit(env.base_url).netloc, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
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
