"""The SPEC 15 figures of `make bench`: ten-row jobs of a second customer, enqueued through POST /enqueue.

Fairness: while the big append job runs, ten small jobs of customer "small" are posted 0.3 s
apart from 1 s after the big job began (so all ten fit in a 1M-row append of about 6 s), each
timed from its POST to status `succeeded`.
Small-job rate, on idle workers after every other run: single POSTs each waited for (the
idle POST latency), then 200 POSTs one after another from one client, timed from the first
POST to the last job succeeded. Every small job must succeed with its 10 rows inserted, and
the small customer's table must hold exactly 10 rows of each.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from bench.data import HEADER, records
from bench.reader import JobReader
from service.storage.jobs import FINAL_STATUSES, Job

if TYPE_CHECKING:
    from bench.runs import RestServer, Session

CUSTOMER = "small"  # the second customer of the bench's customer map, with its own database
ROWS = 10
FAIR_JOBS = 10
FAIR_START_SECONDS = 1.0  # after the big job was enqueued
FAIR_SPACING_SECONDS = 0.3  # the tenth is due 3.7 s in
IDLE_POSTS = 20
RATE_JOBS = 200
POLL_SECONDS = 0.02
LIMIT_SECONDS = 600.0  # a small job not final after this long stops the bench
POST_TIMEOUT_SECONDS = 60.0
STATS_SECONDS = 1.5  # a backend that keeps its connection reports its statistics about once a second


@dataclass
class Posted:
    """One small job: when its POST was sent (perf_counter), how long the answer took, when it was seen final."""

    job_id: str
    posted: float
    post_seconds: float
    done: float | None = None
    job: Job | None = None
    after_big: bool = False  # seen final only after the big job had ended

    @property
    def seconds(self) -> float:
        """From the POST to the job seen final."""
        assert self.done is not None
        return self.done - self.posted


@dataclass
class Fairness:
    """Small jobs posted beside the big append job; big_end: seconds into the big job it was seen ended, if
    that happened before the last small job was done."""

    latencies: list[float]
    planned: int
    big_end: float | None
    after_big: int
    not_posted: int


@dataclass
class Rate:
    """Single POSTs on an idle server (each job waited for), then a burst of POSTs from one client."""

    idle_post: list[float] = field(default_factory=list)
    idle_done: list[float] = field(default_factory=list)
    jobs: int = 0
    seconds: float = 0.0
    posting: float = 0.0  # from the first POST to the last answer
    connections: int = 0  # app-DB connections opened during the burst (the service's: the bench keeps its one)
    post: list[float] = field(default_factory=list)


def write_file(blob_root: Path) -> Path:
    """The small customer's ten-row users CSV, in its blob area."""
    folder = blob_root / CUSTOMER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"users-{ROWS}.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for line, _, _, _ in records(ROWS, 0.0):
            out.write(line)
    return path


def post_enqueue(rest: RestServer, uri: str) -> tuple[str, float, float]:
    """POST /enqueue of one small append job: (job id, perf_counter when sent, seconds to the answer).

    A new connection each time, as gunicorn's sync worker closes it after each answer. Stops
    the bench on anything but 202."""
    body = json.dumps({"customer_id": CUSTOMER, "product_type": "users", "blob_uri": uri}).encode()
    conn = rest.connection(timeout=POST_TIMEOUT_SECONDS)
    started = time.perf_counter()
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {rest.token}"}
        conn.request("POST", "/enqueue", body, headers)
        response = conn.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SystemExit(f"bench: POST /enqueue failed: {exc!r}\nREST server output: {rest.log_path}") from None
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if response.status != 202:
        text = answer[:2000].decode("utf-8", "replace")
        raise SystemExit(
            f"bench: POST /enqueue answered {response.status}: {text}\nREST server output: {rest.log_path}"
        )
    return str(json.loads(answer)["job_id"]), started, elapsed


def alive(session: Session, since: float, what: str) -> None:
    """Stop the bench when the workers died or a small job takes absurdly long."""
    code = session.master.poll()
    if code is not None:
        raise SystemExit(f"bench: the worker processes exited (code {code}); their output: {session.log_path}")
    if time.perf_counter() - since > LIMIT_SECONDS:
        raise SystemExit(f"bench: {what} still not done after {LIMIT_SECONDS:.0f} s; worker output: {session.log_path}")


def wait_one(session: Session, jobs: JobReader, posted: Posted) -> None:
    """Poll one small job until it is final."""
    while True:
        job = jobs.get(posted.job_id)
        assert job is not None, f"small job {posted.job_id} vanished"
        if job.finished:
            posted.done, posted.job = time.perf_counter(), job
            return
        alive(session, posted.posted, f"small job {posted.job_id}")
        time.sleep(POLL_SECONDS)


def check(session: Session, posted: list[Posted], label: str) -> None:
    """Every small job succeeded with its 10 rows, and the small customer's table holds exactly those."""
    for item in posted:
        job = item.job
        assert job is not None
        if job.status != "succeeded":
            raise session.failure(job, label, f"the small job ended {job.status}")
        if (job.rows_total, job.rows_inserted, job.rows_invalid) != (ROWS, ROWS, 0):
            raise session.failure(
                job,
                label,
                f"rows_total {job.rows_total}, rows_inserted {job.rows_inserted}, rows_invalid {job.rows_invalid}; "
                f"must be {ROWS}, {ROWS}, 0",
            )
    held = rows_by_job(session.small, [item.job_id for item in posted])
    for item in posted:
        if held.get(item.job_id, 0) != ROWS:
            assert item.job is not None
            raise session.failure(
                item.job, label, f"the small customer's table holds {held.get(item.job_id, 0)} rows of it, not {ROWS}"
            )


def rows_by_job(dsn: str, job_ids: list[str]) -> dict[str, int]:
    """Rows in a customer's users table per job, for these jobs."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT job_id::text, count(*) FROM users WHERE job_id = ANY(%s::uuid[]) GROUP BY job_id", (job_ids,)
            )
            return {str(job_id): int(n) for job_id, n in cur.fetchall()}
    finally:
        conn.close()


def warm_up(session: Session, rest: RestServer, uri: str) -> None:
    """One small job through the REST server before anything is timed: the small customer's table then
    exists, and the whole POST /enqueue path is known to work before the big run starts."""
    jobs = JobReader(session.app)
    try:
        job_id, posted, seconds = post_enqueue(rest, uri)
        item = Posted(job_id, posted, seconds)
        wait_one(session, jobs, item)
    finally:
        jobs.close()
    check(session, [item], "small job (warm-up)")


class FairnessProbe:
    """Posts the small jobs beside the big job from a thread, and times each from its POST to final.

    start(big job id, its start) is called by the big run right after its enqueue; result()
    waits until every small job posted is final, checks them, and gives the figures. No small
    job is posted once the big job is seen ended."""

    def __init__(self, session: Session, rest: RestServer, uri: str) -> None:
        self.session, self.rest, self.uri = session, rest, uri
        self.jobs = JobReader(session.app)  # used by the probe's thread only
        self._thread: threading.Thread | None = None
        self._posted: list[Posted] = []
        self._big_end: float | None = None
        self._error: BaseException | None = None

    def start(self, big_id: str, started: float) -> None:
        """Begin beside the big job, enqueued at `started` (perf_counter)."""
        self._thread = threading.Thread(target=self._main, args=(big_id, started), daemon=True)
        self._thread.start()

    def result(self) -> Fairness:
        """Wait for the small jobs; check them; the figures."""
        assert self._thread is not None, "the probe was never started"
        self._thread.join()
        self.jobs.close()
        if self._error is not None:
            raise self._error
        posted = self._posted
        check(self.session, posted, "small job beside the big one")
        return Fairness(
            latencies=[item.seconds for item in posted],
            planned=FAIR_JOBS,
            big_end=self._big_end,
            after_big=sum(item.after_big for item in posted),
            not_posted=FAIR_JOBS - len(posted),
        )

    def _main(self, big_id: str, started: float) -> None:
        try:
            self._run(big_id, started)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def _run(self, big_id: str, started: float) -> None:
        posted = self._posted
        ended_at: float | None = None
        while True:
            now = time.perf_counter()
            if ended_at is None:
                big = self.jobs.get(big_id)
                assert big is not None, f"big job {big_id} vanished"
                if big.finished:
                    ended_at = now
                    self._big_end = now - started
            pending = [item for item in posted if item.done is None]
            if pending:
                now_jobs = self.jobs.get_many([item.job_id for item in pending])
                seen = time.perf_counter()
                for item in pending:
                    job = now_jobs.get(item.job_id)
                    assert job is not None, f"small job {item.job_id} vanished"
                    if job.finished:
                        item.done, item.job, item.after_big = seen, job, ended_at is not None
            due = started + FAIR_START_SECONDS + FAIR_SPACING_SECONDS * len(posted)
            if ended_at is None and len(posted) < FAIR_JOBS and time.perf_counter() >= due:
                job_id, sent, seconds = post_enqueue(self.rest, self.uri)
                posted.append(Posted(job_id, sent, seconds))
                continue
            if all(item.done is not None for item in posted) and (ended_at is not None or len(posted) == FAIR_JOBS):
                if ended_at is None:
                    self._big_end = None  # the big job ran past every small one
                return
            alive(self.session, started, "the small jobs beside the big one")
            time.sleep(POLL_SECONDS)


def rate(session: Session, rest: RestServer, uri: str) -> Rate:
    """On idle workers: IDLE_POSTS single POSTs each waited for, then RATE_JOBS POSTs as fast as one client
    sends them, timed from the first POST to the last job seen final."""
    result = Rate()
    jobs = JobReader(session.app)
    try:
        singles: list[Posted] = []
        for _ in range(IDLE_POSTS):
            job_id, sent, seconds = post_enqueue(rest, uri)
            item = Posted(job_id, sent, seconds)
            wait_one(session, jobs, item)
            singles.append(item)
        check(session, singles, "small job on an idle server")
        result.idle_post = [item.post_seconds for item in singles]
        result.idle_done = [item.seconds for item in singles]
        burst: list[Posted] = []
        sessions = jobs.sessions()
        for _ in range(RATE_JOBS):
            job_id, sent, seconds = post_enqueue(rest, uri)
            burst.append(Posted(job_id, sent, seconds))
        first = burst[0].posted
        posting = burst[-1].posted + burst[-1].post_seconds - first
        end = wait_all(session, jobs, [item.job_id for item in burst], first)
        time.sleep(STATS_SECONDS)
        result.connections = jobs.sessions() - sessions
        final = jobs.get_many([item.job_id for item in burst])
        for item in burst:
            item.done, item.job = end, final.get(item.job_id)
        check(session, burst, "small job of the burst")
        result.jobs, result.seconds, result.posting = len(burst), end - first, posting
        result.post = [item.post_seconds for item in burst]
    finally:
        jobs.close()
    return result


def wait_all(session: Session, jobs: JobReader, job_ids: list[str], since: float) -> float:
    """Poll until every one of these jobs is final; when that was seen (perf_counter)."""
    while jobs.count_final(job_ids, FINAL_STATUSES) < len(job_ids):
        alive(session, since, f"the burst of {len(job_ids)} small jobs")
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def fairness_lines(fairness: Fairness | None, width: int) -> list[str]:
    """The table's line on the small jobs beside the big one."""
    lines = []
    if fairness is not None:
        label = "small job while a big one runs"
        got = fairness.latencies
        if got:
            text = f"median {statistics.median(got):.2f} s, worst {max(got):.2f} s ({len(got)} jobs"
        else:
            text = "none measured (0 jobs"
        if fairness.not_posted:
            text += (
                f"; {fairness.not_posted} of {fairness.planned} never posted: the big job ended "
                f"{fairness.big_end:.1f} s in"
            )
        if fairness.after_big:
            text += f"; {fairness.after_big} of them finished after the big job ended {fairness.big_end:.1f} s in"
        lines.append(f"{label:<{width}}{text})")
    return lines


def rate_lines(rate: Rate | None, width: int) -> list[str]:
    """The table's lines on small jobs on idle workers: one POST at a time, then the burst."""
    lines = []
    if rate is not None and rate.jobs:
        label = "POST /enqueue on an idle server"
        lines.append(
            f"{label:<{width}}median {statistics.median(rate.idle_post) * 1000:.0f} ms "
            f"({len(rate.idle_post)} POSTs; each job done in median {statistics.median(rate.idle_done):.2f} s)"
        )
        label = "small-job rate via POST /enqueue"
        lines.append(
            f"{label:<{width}}{rate.jobs / rate.seconds:.1f} jobs/s end to end ({rate.jobs} jobs of {ROWS} rows in "
            f"{rate.seconds:.2f} s, the last POST answered at {rate.posting:.2f} s); "
            f"POST median {statistics.median(rate.post) * 1000:.0f} ms, p90 {percentile(rate.post, 0.9) * 1000:.0f} ms"
        )
        label = "... app-DB connections opened"
        lines.append(
            f"{label:<{width}}{rate.connections / rate.jobs:.1f} per job during that run "
            f"({rate.connections:,} for {rate.jobs} jobs; REST server and workers)"
        )
    return lines
