"""Replay (SPEC 14): a new job that validates a finished job's stored rejected rows against
the product schema as it is now, and writes those that pass. It reads no blob.

The replay job's plan keeps the original file's format and header; its chunks are runs of
the original's rejects in source_row order. A chunk's rows are not contiguous, so its
`start_pos` (a byte offset for a file) holds the chunk's last source_row instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service import formats
from service.errors import JobConflict, JobFailed
from service.stages.fetch import map_columns, prepare_tables
from service.stages.services import INSERT, REPLAY, Services
from service.storage.jobs import ChunkWork, Job

REPLAYABLE = ("succeeded", "failed", "cancelled", "undone")
CHUNKS_PER_TRANSACTION = 8


def request(services: Services, original: Job) -> tuple[Job, bool]:
    """Replay a finished job's rejects: (the new job, True); or (its replay, False) while one is
    queued, running or succeeded, so a double click or a client's retry writes no row twice.

    Raises JobConflict when the job has not ended or has no rejects."""
    if original.status not in REPLAYABLE:
        raise JobConflict(
            f"job {original.id} is {original.status}; only the rejects of a job that has ended can be replayed"
        )
    live = services.jobs.live_replay(original.id)
    if live is not None:
        return live, False
    if not services.customer(original.customer_id).has_rejects(original.id):
        raise JobConflict(f"job {original.id} has no rejected rows to replay")
    return services.jobs.create_replay(original, replay_options(original), REPLAY)


def replay_options(original: Job) -> dict[str, Any]:
    """The options of a replay of `original`: its own, with `replay_of`.

    A replace would delete every row not among the replayed ones, so a replay of a replace
    job upserts instead."""
    options = {key: value for key, value in original.options.items() if key != "replay_of"}
    if options.get("mode") == "replace":
        options["mode"] = "upsert"
        options.pop("allow_empty", None)
    options["replay_of"] = original.id
    return options


def replay(services: Services, job: Job) -> None:
    """The first stage of a replay job, instead of fetch: map the original header anew, cut the
    original's rejects into chunks."""
    original = services.jobs.plan(job.replay_of or "")
    if not original:
        raise JobFailed(f"job {job.replay_of} has no plan to replay (it failed before reading its file)")
    product = services.products.get(job.product_type)
    kind = original["format"]["kind"]
    names = original["header"]["names"]
    columns, warnings, notes = map_columns(product, names) if kind not in formats.KEYED else ([], [], [])
    prepare_tables(services, job, product)
    replay_plan = {"format": original["format"], "header": original["header"], "columns": columns}
    if not services.jobs.save_plan(job.id, replay_plan, warnings, [], notes):
        return
    rows = services.customer(job.customer_id).reject_rows(job.replay_of or "")
    size = services.config.chunk_rows
    chunks = [
        (n, part[0], part[0], part[-1], len(part))
        for n, part in enumerate(rows[i : i + size] for i in range(0, len(rows), size))
    ]
    for i in range(0, len(chunks), CHUNKS_PER_TRANSACTION):
        services.jobs.add_chunks(job.id, chunks[i : i + CHUNKS_PER_TRANSACTION])
    services.jobs.finish_planning(job.id, len(chunks), INSERT)


def last_row(work: ChunkWork) -> int:
    """The last source_row of a replay chunk (kept in its start_pos)."""
    return work.start_pos


def records(services: Services, job: Job, work: ChunkWork) -> Iterator[formats.Record]:
    """The chunk's stored rejects of the original job, as records read from a file."""
    store = services.customer(job.customer_id)
    for reject in store.iter_rejects(job.replay_of or "", after=work.first_row - 1, limit=work.row_count):
        yield formats.Record(reject.source_row, reject.source_row, 0, reject.cells)
