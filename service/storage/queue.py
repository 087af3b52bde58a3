"""Dramatiq's message wire format and the queue names, without importing Dramatiq (the edges
write messages inside their own transactions and must not start a broker). The stages'
messages (service.stages.messages) and webhook deliveries both build on it;
tests/unit/test_messages.py checks the format against Dramatiq's.

A webhook's first delivery message is built here, not by service.stages.webhooks: the app
DB's store writes it in the transaction that ends the job, and storage imports no stage."""

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
DELIVER_WEBHOOK = "deliver_webhook"  # the delivery actor's name: stable, queued messages store it
DELIVER_FEED_EVENT = "deliver_feed_event"  # a feed's events (feed.late, SPEC 20), on the same queue

# (queue name, message id, encoded message), as service.stages.messages.dispatch returns them.
Encoded = tuple[str, str, dict[str, Any]]


def delay_queue(queue: str) -> str:
    """Where Dramatiq keeps a queue's messages that have an eta."""
    return f"{queue}.DQ"


def encode(queue: str, actor_name: str, args: list[Any], delay_seconds: float = 0.0) -> Encoded:
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


def feed_event_message(
    feed_id: str, event: str, attempt: int = 1, first_at: float | None = None, delay_seconds: float = 0.0
) -> Encoded:
    """The message for one delivery attempt of a feed's event (feed.late) to the feed's callback_url."""
    return encode(WEBHOOKS_QUEUE, DELIVER_FEED_EVENT, [feed_id, event, attempt, first_at], delay_seconds)


def delivery_message(
    job_id: str, status: str, attempt: int = 1, first_at: float | None = None, delay_seconds: float = 0.0
) -> Encoded:
    """The message for one webhook delivery attempt in Dramatiq's wire format; with a delay it
    goes to the delay queue with an eta, as Dramatiq's own `send_with_options(delay=...)` would put it."""
    return encode(WEBHOOKS_QUEUE, DELIVER_WEBHOOK, [job_id, status, attempt, first_at], delay_seconds)
