"""Many open streams on the real `python -m service.grpc_server` (issue 18 point 5): 256 WatchJob
and ListRejects streams whose clients read slowly or not at all hold no thread and no database
connection, Health/Check and Enqueue still answer within 1 s, and every watcher hears the end."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.edges.grpc.streams import MAX_CUSTOMER_STREAMS
from service.generated import importer_pb2, importer_pb2_grpc
from service.sources import blob
from tests.conftest import query, until
from tests.e2e.conftest import Stack
from tests.e2e.test_grpc import ACME, GLOBEX, TIMEOUT, job_nobody_runs, wait_finished

STREAMS = 256  # half WatchJob, half ListRejects
REJECTS = 1000  # ListRejects' most per call; at ~0.4 KB each, far more than a stream's HTTP/2 window
OPEN_SECONDS = 30.0  # for every stream's first message
PROBES = 20  # Health/Check and Enqueue calls timed while the streams are open
PROBE_TIMEOUT = 5.0
LATENCY_LIMIT = 1.0
# Channels to one target share a connection unless told not to; these are separate clients.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
# A client that keeps its stream window small (64 KiB, as most HTTP/2 clients do; grpc's own
# grows it): when it does not read, the server's sends wait, as they would for a hostile one.
SMALL_WINDOW = (*OWN_CONNECTION, ("grpc.http2.bdp_probe", 0))
MAX_THREADS = 64  # in the server process with every stream open: far fewer than streams


@pytest.fixture(scope="module")
def server(stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    """A real gRPC server of its own for the module; (process, target)."""
    return stack.grpc_server()


@pytest.fixture(scope="module")
def target(server: tuple[subprocess.Popen[bytes], str]) -> str:
    return server[1]


@pytest.fixture(scope="module")
def rejected(stack: Stack, target: str) -> str:
    """An acme job with REJECTS rejected rows, each with a long bad email."""
    rows = "".join(f"r{n},{'not-an-email-' * 12}{n},{n % 100}\n" for n in range(REJECTS))
    path = stack.blob("acme", f"rejects-{uuid.uuid4().hex[:8]}.csv", "external_id,email,age\n" + rows)
    request = struct_pb2.Struct()
    request.update({"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)})
    with grpc.insecure_channel(target) as channel:
        importer = importer_pb2_grpc.ImporterStub(channel)
        job_id = importer.Enqueue(request, metadata=ACME, timeout=TIMEOUT)["job_id"]
        job = wait_finished(importer, job_id)
    assert (job.status, job.rows_invalid) == ("succeeded", REJECTS), job
    return str(job_id)


@dataclass
class Latencies:
    """Seconds each probe took (a call that failed or timed out counts as its timeout)."""

    health: list[float] = field(default_factory=list)
    enqueue: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @staticmethod
    def summary(values: list[float]) -> str:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
        )


async def timed(call: Callable[[], Awaitable[Any]], into: list[float], failures: list[str], name: str) -> None:
    """Run one probe (its deadline is PROBE_TIMEOUT) and record how long it took."""
    started = time.monotonic()
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        failures.append(f"{name}: {error.code().name} {error.details()}")
    into.append(time.monotonic() - started)


async def probe(target: str, stack: Stack) -> Latencies:
    """Time Health/Check and another customer's Enqueue, one after the other, on a client of its own."""
    path = stack.blob("globex", f"probe-{uuid.uuid4().hex[:8]}.csv", "external_id,email\np1,p1@example.com\n")
    request = struct_pb2.Struct()
    request.update({"customer_id": "globex", "product_type": "users", "blob_uri": blob.uri_for(path)})
    found = Latencies()
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        importer = importer_pb2_grpc.ImporterStub(channel)
        check = functools.partial(
            checker.Check, health_pb2.HealthCheckRequest(service="importer.Importer"), timeout=PROBE_TIMEOUT
        )
        enqueue = functools.partial(importer.Enqueue, request, metadata=GLOBEX, timeout=PROBE_TIMEOUT)
        for _ in range(PROBES):
            await timed(check, found.health, found.failures, "Health/Check")
            await timed(enqueue, found.enqueue, found.failures, "Enqueue")
            if len(found.failures) >= 3:
                break  # the server does not answer: no need to wait out every probe
    return found


async def first_messages(calls: list[Any]) -> list[str]:
    """Read each call's first message (at most OPEN_SECONDS in all); what went wrong with the others."""
    tasks = [asyncio.ensure_future(call.read()) for call in calls]
    done, pending = await asyncio.wait(tasks, timeout=OPEN_SECONDS)
    problems = [f"no message after {OPEN_SECONDS:.0f} s" for _ in pending]
    for task in done:
        error = task.exception()
        if error is not None:
            problems.append(
                f"{error.code().name}: {error.details()}" if isinstance(error, grpc.RpcError) else repr(error)
            )
        elif task.result() is grpc.aio.EOF:
            problems.append("ended without a message")
    for task in pending:
        task.cancel()
    return problems


async def rest_of(call: Any) -> list[Any]:
    """Every message left on a stream, to its end."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


def connections_in_a_transaction(stack: Stack, customer: str) -> int:
    """Connections to the customer's database in the middle of a transaction (a held cursor)."""
    dbname = query(stack.customer_dsns[customer], "SELECT current_database()")[0][0]
    rows = query(
        stack.customer_dsns[customer],
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%'",
        (dbname,),
    )
    return int(rows[0][0])


async def exercise(stack: Stack, server: tuple[subprocess.Popen[bytes], str], watched: str, rejected: str) -> None:
    """Open the streams, probe while they are open, end the watched job, read what the streams say."""
    process, target = server
    watch_channel = grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
    list_channels = [grpc.aio.insecure_channel(target, options=SMALL_WINDOW) for _ in range(4)]
    try:
        watches = [
            importer_pb2_grpc.ImporterStub(watch_channel).WatchJob(
                importer_pb2.GetJobRequest(job_id=watched), metadata=ACME, timeout=300
            )
            for _ in range(STREAMS // 2)
        ]
        request = importer_pb2.ListRejectsRequest(job_id=rejected, limit=REJECTS)
        lists = [
            importer_pb2_grpc.ImporterStub(list_channels[n % len(list_channels)]).ListRejects(
                request, metadata=ACME, timeout=300
            )
            for n in range(STREAMS // 2)
        ]
        slow, idle = lists[::2], lists[1::2]  # slow readers take one message now; idle ones nothing yet
        problems = await first_messages(watches + slow)
        threads = len(os.listdir(f"/proc/{process.pid}/task"))
        latencies = await probe(target, stack)
        print(f"\nwith {STREAMS} streams open: Health/Check {Latencies.summary(latencies.health)}")
        print(f"with {STREAMS} streams open: Enqueue {Latencies.summary(latencies.enqueue)}; {threads} threads")

        assert not problems, f"{len(problems)} of {len(watches) + len(slow)} streams did not open: {problems[:3]}"
        assert not latencies.failures, latencies.failures[:3]
        assert max(latencies.health) < LATENCY_LIMIT, Latencies.summary(latencies.health)
        assert max(latencies.enqueue) < LATENCY_LIMIT, Latencies.summary(latencies.enqueue)
        assert threads < MAX_THREADS, threads
        # A reader that does not read holds no cursor (each page is read to its end, then sent):
        # once the pages being read now are done, no connection stays in a transaction.
        until(lambda: connections_in_a_transaction(stack, "acme") == 0, timeout=10, interval=0.1)

        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            cancelled = await importer_pb2_grpc.ImporterStub(channel).CancelJob(
                importer_pb2.GetJobRequest(job_id=watched), metadata=ACME, timeout=TIMEOUT
            )
        assert cancelled.status == "cancelled"
        endings = await asyncio.wait_for(asyncio.gather(*(rest_of(watch) for watch in watches)), TIMEOUT)
        assert all(ending and ending[-1].status == "cancelled" for ending in endings), endings[:3]
        assert {await watch.code() for watch in watches} == {grpc.StatusCode.OK}

        # Every idle reader's stream is still there, and a reader that comes back gets all its rows in order.
        assert not await first_messages(idle)
        rows = await asyncio.wait_for(asyncio.gather(*(rest_of(call) for call in lists[:8])), TIMEOUT)
        wanted = list(range(2, REJECTS + 1))  # each reader took row 1 already
        for rest in rows:
            got = [r.source_row for r in rest]
            assert got == wanted, (len(got), got[:3], got[-3:])
        for call in lists:
            call.cancel()
    finally:
        for opened in (watch_channel, *list_channels):
            await opened.close()


def test_256_streams_that_read_slowly_or_not_at_all_leave_health_and_enqueue_answering_within_1_s(
    stack: Stack, server: tuple[subprocess.Popen[bytes], str], rejected: str
) -> None:
    assert STREAMS <= MAX_CUSTOMER_STREAMS  # one customer may hold them all
    asyncio.run(exercise(stack, server, job_nobody_runs(stack), rejected))


async def stop_while_streaming(process: subprocess.Popen[bytes], target: str, watched: str, rejected: str) -> None:
    """SIGTERM the server with watches and unread ListRejects open; each watch hears UNAVAILABLE."""
    channel = grpc.aio.insecure_channel(target, options=SMALL_WINDOW)
    try:
        importer = importer_pb2_grpc.ImporterStub(channel)
        watches = [
            importer.WatchJob(importer_pb2.GetJobRequest(job_id=watched), metadata=ACME, timeout=120) for _ in range(64)
        ]
        request = importer_pb2.ListRejectsRequest(job_id=rejected, limit=REJECTS)
        lists = [importer.ListRejects(request, metadata=ACME, timeout=120) for _ in range(64)]
        assert not await first_messages(watches + lists[:1])
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert time.monotonic() - started < 30
        for watch in watches:
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await rest_of(watch)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        for call in lists:
            call.cancel()
    finally:
        await channel.close()


def test_sigterm_with_128_streams_open_ends_the_watches_with_unavailable_and_exits_0(
    stack: Stack, rejected: str
) -> None:
    process, target = stack.grpc_server()
    asyncio.run(stop_while_streaming(process, target, job_nobody_runs(stack), rejected))
