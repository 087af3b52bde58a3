"""Queue messages for the stages, in Dramatiq's wire format, without importing Dramatiq.

The edges (REST, gRPC, CLI) write messages inside their own transactions and must not
start a broker to do so; tests/unit/test_messages.py checks this format against Dramatiq's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from service.pipeline import DISCARD, FETCH, INSERT, PARSE, REPLAY, UNDO, VALIDATE

JOBS_QUEUE = "imports"  # job-level stages: fetch, parse, insert
CHUNKS_QUEUE = "import_chunks"  # one message per chunk: validate
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
    queue = QUEUES[actor_name]
    message_id = str(uuid.uuid4())
    message = {
        "queue_name": queue,
        "actor_name": actor_name,
        "args": list(args),
        "kwargs": {},
        "options": {},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    return queue, message_id, message
