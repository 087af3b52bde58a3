"""The gRPC streams' shared parts without a server: stream caps, the shared job polls, send turns."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import grpc
import pytest

from service.edges.grpc.streams import JobPolls, Refused, StreamSlots, Turns
from service.storage.jobs import Job
from tests.unit.test_openapi import a_job

JOB_ID = "7b1e4c2a-9d3f-4a6b-8c5d-1e2f3a4b5c6d"


async def direct(call: Callable[..., Any], *args: Any) -> Any:
    """A `run` that calls at once (no thread pool)."""
    return call(*args)


class ScriptedJob:
    """A job read from the app DB: each read returns the next state, the last one for ever."""

    def __init__(self, states: list[Job]) -> None:
        self.states = states
        self.reads: list[str] = []

    def read(self, job_id: str) -> Job:
        self.reads.append(job_id)
        return self.states[min(len(self.reads) - 1, len(self.states) - 1)]


def running(done: int, job_id: str = JOB_ID) -> Job:
    return dataclasses.replace(a_job(job_id, "running"), chunks_done=done, chunks_total=3)


async def watch(polls: JobPolls, first: Job) -> list[Job]:
    """What one watcher is told after `first`."""
    started = asyncio.get_running_loop().time()
    async with aclosing(polls.follow(first, started)) as changes:
        return [job async for job in changes]


def test_a_hundred_watchers_of_one_job_share_one_poll_and_all_hear_the_final_status() -> None:
    states = [running(0), running(1), running(1), running(2), a_job(JOB_ID, "succeeded")]
    job = ScriptedJob(states)

    async def scenario() -> list[list[Job]]:
        polls = JobPolls(job.read, direct, every=0.01)
        return await asyncio.wait_for(asyncio.gather(*(watch(polls, running(0)) for _ in range(100))), 10)

    told = asyncio.run(scenario())
    assert len(job.reads) == len(states)  # one read per poll, however many watch
    for changes in told:
        assert [(j.status, j.chunks_done) for j in changes] == [("running", 1), ("running", 2), ("succeeded", 0)]


def test_the_polls_of_many_watched_jobs_keep_to_the_rate() -> None:
    ids = [f"7b1e4c2a-9d3f-4a6b-8c5d-{n:012d}" for n in range(20)]
    reads: list[str] = []

    def read(job_id: str) -> Job:
        reads.append(job_id)
        return running(0, job_id)

    async def scenario() -> None:
        polls = JobPolls(read, direct, every=0.01, rate=40.0)
        watchers = [asyncio.ensure_future(watch(polls, running(0, job_id))) for job_id in ids]
        await asyncio.sleep(1.0)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    asyncio.run(scenario())
    # 20 jobs at most 40 polls a second: each job every 0.5 s (not every 0.01 s: 2,000 reads)
    assert 20 <= len(reads) <= 60, len(reads)


def test_the_poll_stops_when_its_last_watcher_leaves() -> None:
    job = ScriptedJob([running(0)])

    async def scenario() -> int:
        polls = JobPolls(job.read, direct, every=0.01)
        watcher = asyncio.ensure_future(watch(polls, running(0)))
        await asyncio.sleep(0.2)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        left = len(job.reads)
        await asyncio.sleep(0.2)
        return len(job.reads) - left

    assert asyncio.run(scenario()) <= 1  # at most a poll already under way


def test_a_failed_poll_and_a_stop_reach_every_watcher() -> None:
    def broken(job_id: str) -> Job:
        raise RuntimeError("app database gone")

    async def scenario() -> tuple[list[BaseException], list[BaseException]]:
        failing = JobPolls(broken, direct, every=0.01)
        failed = await asyncio.gather(*(watch(failing, running(0)) for _ in range(3)), return_exceptions=True)
        stopping = JobPolls(ScriptedJob([running(0)]).read, direct, every=0.01)
        waiting = [asyncio.ensure_future(watch(stopping, running(0))) for _ in range(3)]
        await asyncio.sleep(0.05)
        stopping.stop(Refused(grpc.StatusCode.UNAVAILABLE, "shutting down"))
        stopped = await asyncio.gather(*waiting, return_exceptions=True)
        return list(failed), list(stopped)  # type: ignore[arg-type]

    failed, stopped = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) and str(e) == "app database gone" for e in failed)
    assert all(isinstance(e, Refused) and e.code == grpc.StatusCode.UNAVAILABLE for e in stopped)


def test_streams_past_a_customers_share_or_the_process_cap_are_refused_naming_the_limit() -> None:
    slots = StreamSlots(total=3, per_customer=2)
    with slots.hold("acme"), slots.hold("acme"):
        with pytest.raises(Refused) as refused:
            with slots.hold("acme"):
                pass
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "customer acme has 2 streams open" in str(refused.value)
        with slots.hold("globex"):
            with pytest.raises(Refused) as full:
                with slots.hold("initech"):
                    pass
            assert "this server has 3 streams open, its limit" in str(full.value)
    assert slots.open == 0
    with slots.hold("acme"), slots.hold("acme"):
        pass  # the slots came back


def test_a_turn_held_by_a_send_that_waits_ends_after_its_seconds() -> None:
    async def scenario() -> float:
        turns = Turns(size=1, seconds=0.1)
        never = asyncio.Event()

        async def stuck() -> None:
            async with turns.turn():
                await never.wait()  # a client that does not read: the send waits for ever

        holder = asyncio.ensure_future(stuck())
        await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        async with turns.turn():
            waited = asyncio.get_running_loop().time() - started
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        return waited

    assert 0.05 <= asyncio.run(scenario()) < 1.0
