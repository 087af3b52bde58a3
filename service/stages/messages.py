"""Queue messages for the stages, in Dramatiq's wire format, without importing Dramatiq.

The edges (REST, gRPC, CLI) write messages inside their own transactions and must not
start a broker to do so; tests/unit/test_messages.py checks this format against Dramatiq's.
"""

from __future__ import annotations

from typing import Any

from service.stages.services import DISCARD, FETCH, INSERT, PARSE, REPLAY, UNDO, VALIDATE
from service.storage.queue import CHUNKS_QUEUE, JOBS_QUEUE, encode

__all__ = ["CHUNKS_QUEUE", "JOBS_QUEUE", "QUEUES", "dispatch"]

QUEUES = {
    FETCH: JOBS_QUEUE,
    PARSE: JOBS_QUEUE,
    VALIDATE: CHUNKS_QUEUE,
    INSERT: JOBS_QUEUE,
    UNDO: JOBS_QUEUE,
    DISCARD: JOBS_QUEUE,
    REPLAY: JOBS_QUEUE,
}


def dispatch(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
    """Encode a message for a stage's actor as Dramatiq would: (queue, message id, message)."""
    return encode(QUEUES[actor_name], actor_name, list(args))
