"""Fair turns (SPEC 15) through real workers: a customer never has more than chunks_in_flight
chunks out, a small job of another customer overtakes a big one, jobs of one customer alternate,
and the sweep sends turns nobody sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service.stages.messages import dispatch
from service.storage.jobs import JobStore
from tests.conftest import Databases, query
from tests.integration.conftest import HELD_QUEUE, Pipeline, make_pipeline

IN_FLIGHT = 2
HEADER = "external_id,email,first_name\n"


@pytest.fixture(scope="module")
def turns(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Workers with 2 threads, 3-row chunks and 2 chunks in flight per customer."""
    yield from make_pipeline(databases, tmp_path_factory, ["acme", "globex"], overrides={"chunks_in_flight": IN_FLIGHT})


def users(rows: int, tag: str) -> bytes:
    return (HEADER + "".join(f"{tag}{n},{tag}{n}@example.com,N{n}\n" for n in range(rows))).encode()


def out_now(pipeline: Pipeline, customer: str) -> tuple[int, int]:
    """(chunks sent and not done, live chunk messages) of the customer's running jobs."""
    ((sent,),) = query(
        pipeline.app_dsn,
        "SELECT count(*) FROM import_chunks c JOIN import_jobs j ON j.id = c.job_id "
        "WHERE j.customer_id = %s AND j.status = 'running' AND c.sent AND NOT c.done",
        (customer,),
    )
    ((live,),) = query(
        pipeline.app_dsn,
        "SELECT count(*) FROM dramatiq.queue q JOIN import_jobs j ON q.message -> 'args' ->> 0 = j.id::text "
        "WHERE j.customer_id = %s AND q.state IN ('queued', 'consumed') AND q.message ->> 'actor_name' = 'import_validate'",
        (customer,),
    )
    return int(sent), int(live)


def test_a_customer_never_has_more_chunks_out_than_its_turns(turns: Pipeline) -> None:
    rows = 240  # 80 chunks of 3 rows
    job = turns.enqueue("acme", "users", turns.put("acme", "many.csv", users(rows, "m")))
    most_sent, most_live, samples = 0, 0, 0
    while not (current := turns.jobs.get(job.id)).finished:  # type: ignore[union-attr]
        sent, live = out_now(turns, "acme")
        most_sent, most_live, samples = max(most_sent, sent), max(most_live, live), samples + 1
        time.sleep(0.01)
    assert current.status == "succeeded", current.error
    assert (current.rows_inserted, current.chunks_done) == (rows, 80)
    assert samples > 20
    assert 1 <= most_sent <= IN_FLIGHT
    # A finishing chunk sends the next one before its own message is acked: one more per thread.
    assert most_live <= IN_FLIGHT + 2, most_live


def test_a_small_job_of_another_customer_overtakes_a_big_one(turns: Pipeline) -> None:
    big = turns.enqueue("acme", "users", turns.put("acme", "big.csv", users(600, "b")))  # 200 chunks
    deadline = time.monotonic() + 30
    while (turns.jobs.get(big.id).chunks_done or 0) < 5:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the big job never got going"
        time.sleep(0.02)
    started = time.monotonic()
    small = turns.run("globex", "users", "small.csv", users(3, "s"))
    took = time.monotonic() - started
    big_now = turns.jobs.get(big.id)
    assert small.status == "succeeded", small.error
    assert small.rows_inserted == 3
    # Behind a FIFO queue it would have waited for the big job's ~195 remaining chunks.
    assert big_now is not None and big_now.status == "running", (big_now, took)
    assert big_now.chunks_done < 150, (big_now.chunks_done, took)
    assert turns.wait(big.id).rows_inserted == 600


def test_two_jobs_of_one_customer_take_turns(turns: Pipeline) -> None:
    first = turns.enqueue("acme", "users", turns.put("acme", "a.csv", users(3000, "x")))  # 1,000 chunks
    second = turns.enqueue("acme", "users", turns.put("acme", "b.csv", users(300, "y")))  # 100 chunks
    deadline = time.monotonic() + 30
    while (turns.jobs.get(second.id).chunks_total is None) and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    planned = turns.jobs.get(first.id)
    assert planned is not None and not planned.finished, "the first job ended before the second was planned"
    # From now on the two alternate (the job with the fewest chunks out goes next): the
    # second's 100 chunks are done long before the first's remaining ones. In one queue they
    # would wait behind all of them.
    done = turns.wait(second.id)
    first_now = turns.jobs.get(first.id)
    assert done.status == "succeeded" and done.rows_inserted == 300
    assert first_now is not None and not first_now.finished, (planned.chunks_done, first_now.chunks_done)
    assert turns.wait(first.id).rows_inserted == 3000


def held(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
    """A dispatcher parking messages in a queue no worker reads."""
    _, message_id, message = dispatch(actor_name, args)
    return HELD_QUEUE, message_id, dict(message, queue_name=HELD_QUEUE)


def test_the_sweep_sends_turns_that_nobody_sent_and_never_more_than_the_window(turns: Pipeline) -> None:
    job_id = str(uuid.uuid4())
    with turns.jobs.transaction() as cur:
        cur.execute(
            "INSERT INTO import_jobs (id, customer_id, product_type, blob_uri, status, request_hash) "
            "VALUES (%s, 'globex', 'users', 'file:///nowhere.csv', 'running', %s)",
            (job_id, uuid.uuid4().hex),
        )
        for n in range(3):
            cur.execute(
                "INSERT INTO import_chunks (job_id, chunk_no, first_row, first_line, start_pos, row_count) "
                "VALUES (%s, %s, %s, %s, 0, 3)",
                (job_id, n, 3 * n + 1, 3 * n + 2),
            )
    store = JobStore(turns.app_dsn, dispatch=held, maxconn=1, chunks_in_flight=IN_FLIGHT)
    try:
        store.take_stalled_turns()
        store.take_stalled_turns()  # the window is full: nothing more
    finally:
        store.close()
    sent = query(
        turns.app_dsn, "SELECT chunk_no FROM import_chunks WHERE job_id = %s AND sent ORDER BY chunk_no", (job_id,)
    )
    messages = query(
        turns.app_dsn,
        "SELECT (message -> 'args' ->> 1)::int FROM dramatiq.queue WHERE queue_name = %s "
        "AND message -> 'args' ->> 0 = %s ORDER BY 1",
        (HELD_QUEUE, job_id),
    )
    assert [n for (n,) in sent] == [0, 1]
    assert [n for (n,) in messages] == [0, 1]
    ((chunks_sent,),) = query(turns.app_dsn, "SELECT chunks_sent FROM import_jobs WHERE id = %s", (job_id,))
    assert chunks_sent == IN_FLIGHT
    turns.jobs.fail(job_id, "test over")
