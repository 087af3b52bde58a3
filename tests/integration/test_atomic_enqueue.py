"""Enqueue is atomic: the job row and its queue message commit together or not at all."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from service.stages.messages import dispatch
from service.storage.jobs import JobStore, migrate
from tests.conftest import Databases, query


def test_a_connection_killed_between_job_row_and_message_leaves_neither(databases: Databases) -> None:
    app = databases.create("app")
    migrate(app)

    def dispatch_then_kill(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
        # Called after the job row was written and before the message is: cut the connection now.
        query(
            app,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
        )
        return dispatch(actor_name, args)

    jobs = JobStore(app, dispatch=dispatch_then_kill)
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
        jobs.create_job("acme", "users", "file:///x/acme/u.csv", {})
    assert query(app, "SELECT count(*) FROM import_jobs") == [(0,)]
    assert query(app, "SELECT count(*) FROM dramatiq.queue") == [(0,)]
    jobs.close()


def test_a_rollback_after_the_message_was_written_leaves_neither(databases: Databases) -> None:
    app = databases.create("app")
    migrate(app)
    jobs = JobStore(app, dispatch=dispatch)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), jobs.transaction() as cur:
        jobs._send(cur, [("import_fetch", ("00000000-0000-4000-8000-000000000000",))])
        assert query(app, "SELECT count(*) FROM dramatiq.queue") == [(0,)]  # not visible before commit
        raise Abort
    assert query(app, "SELECT count(*) FROM dramatiq.queue") == [(0,)]
    jobs.close()
