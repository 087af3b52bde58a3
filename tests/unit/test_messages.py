"""The hand-built queue messages are exactly what Dramatiq itself would encode."""

from __future__ import annotations

import dramatiq
from dramatiq_pg.utils import tidy4json

from service.stages.messages import QUEUES, dispatch
from service.stages.services import DISCARD, FETCH, INSERT, PARSE, REPLAY, UNDO, VALIDATE


def test_every_stage_has_a_queue_with_a_name_short_enough_for_its_notify_channel() -> None:
    assert set(QUEUES) == {FETCH, PARSE, VALIDATE, INSERT, UNDO, DISCARD, REPLAY}
    # dramatiq-pg notifies on `dramatiq.<queue>.DQ.enqueue`, at most 63 bytes.
    assert all(len(f"dramatiq.{q}.DQ.enqueue") <= 63 for q in QUEUES.values())


def test_a_dispatched_message_decodes_as_the_same_dramatiq_message() -> None:
    queue, message_id, encoded = dispatch(VALIDATE, ("0b6f1c3e-0000-4000-8000-000000000000", 3))
    decoded = dramatiq.Message(**encoded)
    assert (queue, message_id) == (decoded.queue_name, decoded.message_id)
    assert tidy4json(decoded) == encoded
    assert list(decoded.args) == ["0b6f1c3e-0000-4000-8000-000000000000", 3]
