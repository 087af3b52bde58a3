"""The gRPC edge's server streams (WatchJob, ListRejects) on asyncio: an open stream holds no thread.

A stream waits on the event loop. Only its reads, a page of rejects or a poll of a job at a
time, run in a small pool of threads, each holding a database connection just for that read:
a client that stops reading holds neither a thread nor a connection. Open streams are capped
per process and per customer, and the watchers of one job share one poll of the app DB.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from service.edges.api import OPERATOR, Access, Api
from service.storage import rejects
from service.storage.jobs import Job
from service.storage.rejects import Reject

# 1024 open streams cost about as many small coroutines and HTTP/2 streams; one customer may
# hold half of them, so the other tenants always keep at least 512.
MAX_STREAMS = 1024
MAX_CUSTOMER_STREAMS = MAX_STREAMS // 2
# Threads for the reads of every stream together: the app DB sees at most this many of their
# queries at once, however many streams are open.
STREAM_THREADS = 8
POLL_SECONDS = 0.2
# Polls of all watched jobs together: past POLLS_PER_SECOND / POLL_SECONDS distinct jobs,
# each job is polled less often rather than the app DB more.
POLLS_PER_SECOND = 50.0
PAGE_ROWS = rejects.DEFAULT_PAGE
# Every message costs the event loop about 0.1 ms, and unary calls, health and reflection run
# on the same loop: so at most SENDING_STREAMS streams send a page at once. A page that takes
# longer than TURN_SECONDS (its client is not reading) stops counting: it waits, it costs nothing.
SENDING_STREAMS = 8
TURN_SECONDS = 1.0
# While a unary call waits or runs, a stream pauses before each message (up to this long) so
# that the call gets the CPU and the GIL first; bulk rows wait, a one-row Enqueue does not.
GIVE_WAY_SECONDS = 0.05
GIVE_WAY_STEP = 0.002
COUNTS = (
    "rows_total",
    "rows_valid",
    "rows_invalid",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_duplicate",
    "rows_deleted",
)
PROGRESS = ("status", *COUNTS, "chunks_done", "chunks_total")

T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]


class Refused(Exception):
    """A refusal with its own status code (too many streams, shutting down)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def progress(job: Job) -> tuple[Any, ...]:
    """What a watcher is told about when it changes."""
    return tuple(getattr(job, name) for name in PROGRESS)


class StreamSlots:
    """Open streams, counted per process and per customer (only the event loop touches them)."""

    def __init__(self, total: int = MAX_STREAMS, per_customer: int = MAX_CUSTOMER_STREAMS) -> None:
        self.total = total
        self.per_customer = per_customer
        self.open = 0
        self._by_customer: dict[str, int] = {}

    @contextmanager
    def hold(self, customer_id: str) -> Iterator[None]:
        """One slot for a stream on this customer's job while inside; RESOURCE_EXHAUSTED past a cap."""
        held = self._by_customer.get(customer_id, 0)
        if self.open >= self.total:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server has {self.total} streams open, its limit; try again later or poll GetJob",
            )
        if held >= self.per_customer:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"customer {customer_id} has {held} streams open, the most one customer may hold; "
                "close some or poll GetJob",
            )
        self.open += 1
        self._by_customer[customer_id] = held + 1
        try:
            yield
        finally:
            self.open -= 1
            left = self._by_customer[customer_id] - 1
            if left:
                self._by_customer[customer_id] = left
            else:
                del self._by_customer[customer_id]


class Turns:
    """At most `size` streams send at once; a turn ends with its page, or after `seconds`."""

    def __init__(self, size: int = SENDING_STREAMS, seconds: float = TURN_SECONDS) -> None:
        self._free = asyncio.Semaphore(size)
        self._seconds = seconds

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn to send, and hold it while inside (at most `seconds`)."""
        await self._free.acquire()
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self._free.release()

        timer = asyncio.get_running_loop().call_later(self._seconds, end)
        try:
            yield
        finally:
            timer.cancel()
            end()


@dataclass(eq=False)
class _Feed:
    """The latest poll of one watched job; `changed` is set (and replaced) at each new poll."""

    job_id: str
    watchers: int = 0
    version: int = 0
    latest: Job | Exception | None = None
    read_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class JobPolls:
    """One poll of the app DB per watched job, shared by all its watchers, at a bounded rate."""

    def __init__(
        self, read: Callable[[str], Job], run: Run, every: float = POLL_SECONDS, rate: float = POLLS_PER_SECOND
    ) -> None:
        self._read = read
        self._run = run
        self._every = every
        self._rate = rate
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: Exception | None = None

    async def follow(self, job: Job, read_at: float) -> AsyncGenerator[Job, None]:
        """Each change of progress after `job` (read from `read_at` on), ending with a final status."""
        if self._ended is not None:
            raise self._ended.with_traceback(None)
        feed = self._join(job.id)
        version = feed.version
        try:
            while not job.finished:
                if feed.version == version:
                    await feed.changed.wait()
                version, latest = feed.version, feed.latest
                if isinstance(latest, Exception):
                    raise latest.with_traceback(None)  # shared by every watcher: no traceback grows
                # A poll begun before this watcher's own read may be older than what it was told;
                # a final status is news all the same (the poll that read it is the last one).
                if latest is None or (feed.read_at < read_at and not latest.finished):
                    continue
                if progress(latest) != progress(job):
                    yield latest
                job = latest
        finally:
            feed.watchers -= 1

    def stop(self, refusal: Exception) -> None:
        """Tell every watcher `refusal` and poll no more."""
        self._ended = refusal
        for feed in list(self._feeds.values()):
            self._publish(feed, refusal, math.inf)
        for task in list(self._tasks):
            task.cancel()

    def _join(self, job_id: str) -> _Feed:
        """The job's feed, started by its first watcher."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed(job_id)
            task = asyncio.create_task(self._poll(feed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        feed.watchers += 1
        return feed

    async def _poll(self, feed: _Feed) -> None:
        """Poll the job until it ends, fails to load, or nobody watches it any more."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(max(self._every, len(self._feeds) / self._rate))
                if not feed.watchers:
                    return
                started = loop.time()
                try:
                    job = await self._run(self._read, feed.job_id)
                except Exception as exc:  # the app DB is down, or the job vanished: each watcher is told
                    self._publish(feed, exc, started)
                    return
                self._publish(feed, job, started)
                if job.finished:
                    return
        finally:
            if self._feeds.get(feed.job_id) is feed:
                del self._feeds[feed.job_id]

    @staticmethod
    def _publish(feed: _Feed, latest: Job | Exception, read_at: float) -> None:
        feed.latest, feed.read_at, feed.version = latest, read_at, feed.version + 1
        changed, feed.changed = feed.changed, asyncio.Event()
        changed.set()


class Streams:
    """What the streaming calls share: the slots, the turns to send, the threads for reads, the job polls."""

    def __init__(
        self,
        api: Api,
        threads: int = STREAM_THREADS,
        slots: StreamSlots | None = None,
        give_way: Callable[[], bool] = lambda: False,
    ) -> None:
        self.api = api
        self.slots = slots or StreamSlots()
        self._give_way = give_way
        self.turns = Turns()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-stream")
        self.polls = JobPolls(functools.partial(api.job, OPERATOR), self.run)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """call(*args) in the stream pool, with this task's context (its log fields)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(context.run, call, *args))

    async def watch(self, access: Access, job_id: str) -> AsyncGenerator[Job, None]:
        """The job now, then at each change of its status or counts, ending after its final status."""
        read_at = asyncio.get_running_loop().time()
        job = await self.run(self.api.job, access, job_id)
        with self.slots.hold(job.customer_id):
            yield job
            if not job.finished:
                async with aclosing(self.polls.follow(job, read_at)) as changes:
                    async for change in changes:
                        yield change

    async def rejects(
        self, access: Access, job_id: str, after: int, limit: int
    ) -> AsyncGenerator[tuple[Reject, dict[str, str]], None]:
        """The job's rejected rows after `after`, at most `limit` (0: the default), read a page at a
        time: the next page is read once the client has taken the last one."""
        job = await self.run(self.api.job, access, job_id)
        with self.slots.hold(job.customer_id):
            try:
                left: int | None = rejects.page_limit(limit)
            except (TypeError, ValueError):
                left = None  # the Api refuses it at the first page, in its own words
            while True:
                size = limit if left is None else min(PAGE_ROWS, left)
                page = await self.run(_page, self.api, access, job.id, after, size)
                async with self.turns.turn():
                    for item in page:
                        if self._give_way():
                            await self._pause()
                        yield item  # the caller sends it before asking for the next
                if left is None or len(page) < size or len(page) == left:
                    return
                left -= len(page)
                after = page[-1][0].source_row

    async def _pause(self) -> None:
        """Wait while unary calls are pending, at most GIVE_WAY_SECONDS."""
        loop = asyncio.get_running_loop()
        until = loop.time() + GIVE_WAY_SECONDS
        while self._give_way() and loop.time() < until:
            await asyncio.sleep(GIVE_WAY_STEP)

    def stop(self) -> None:
        """End every watch with UNAVAILABLE (the server is stopping)."""
        self.polls.stop(Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; call WatchJob again"))

    def close(self) -> None:
        """Let the stream threads go once their reads end."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _page(api: Api, access: Access, job_id: str, after: int, size: int) -> list[tuple[Reject, dict[str, str]]]:
    """One page of rejects, read to its end so that its connection is free again."""
    return list(api.rejects_stream(access, job_id, after, size))
