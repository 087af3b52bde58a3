"""Dramatiq's message wire format and the queue names, without importing Dramatiq (the edges
write messages inside their own transactions and must not start a broker). A leaf module:
service.messages (the stages' messages) and service.webhooks both build on it;
tests/unit/test_messages.py checks the format against Dramatiq's."""

from __future__ import annotations

import time
import uuid
from typing import Any

JOBS_QUEUE = "imports"  # job-level stages: fetch, parse, insert, undo, discard, replay
CHUNKS_QUEUE = "import_chunks"  # one message per chunk: validate
# Webhook deliveries, run by threads of their own (actors.deliveries): a dead endpoint never
# holds a thread that a stage needs. Each queue costs every worker process 4 app-DB connections.
WEBHOOKS_QUEUE = "import_webhooks"
QUEUES = (JOBS_QUEUE, CHUNKS_QUEUE, WEBHOOKS_QUEUE)  # every queue; a name is at most 43 characters


def delay_queue(queue: str) -> str:
    """Where Dramatiq keeps a queue's messages that have an eta."""
    return f"{queue}.DQ"


def encode(queue: str, actor_name: str, args: list[Any], delay_seconds: float = 0.0) -> tuple[str, str, dict[str, Any]]:
    """A message for an actor as Dramatiq would write it: (queue, message id, message). With a
    delay it goes to the queue's delay queue with an eta, as `send_with_options(delay=...)` puts it."""
    message_id = str(uuid.uuid4())
    now_ms = int(time.time() * 1000)
    options: dict[str, Any] = {}
    if delay_seconds > 0:
        queue, options = delay_queue(queue), {"eta": now_ms + int(delay_seconds * 1000)}
    message = {
        "queue_name": queue,
        "actor_name": actor_name,
        "args": args,
        "kwargs": {},
        "options": options,
        "message_id": message_id,
        "message_timestamp": now_ms,
    }
    return queue, message_id, message
