"""`importctl worker` hands its process and thread counts to `dramatiq actors`."""

from __future__ import annotations

from service.edges.cli.supervisor import SHUTDOWN_TIMEOUT_MS, worker_command


def test_the_thread_count_reaches_the_actors_through_worker_concurrency() -> None:
    command, env = worker_command(3, 5, {"WORKER_CONCURRENCY": "8", "APP_DB_DSN": "dbname=app"})
    assert command[command.index("--processes") + 1] == "3"
    assert command[command.index("--threads") + 1] == "5"
    # The actors' WorkerConcurrency middleware sets threads from this variable, over --threads.
    assert env["WORKER_CONCURRENCY"] == "5" and env["APP_DB_DSN"] == "dbname=app"


def test_workers_are_told_to_stop_within_the_thirty_seconds_of_spec_10() -> None:
    command, _ = worker_command(1, 1, {})
    assert int(command[command.index("--worker-shutdown-timeout") + 1]) == SHUTDOWN_TIMEOUT_MS < 30_000


def test_workers_get_two_malloc_arenas_unless_the_operator_says_otherwise() -> None:
    assert worker_command(1, 8, {})[1]["MALLOC_ARENA_MAX"] == "2"
    assert worker_command(1, 8, {"MALLOC_ARENA_MAX": "4"})[1]["MALLOC_ARENA_MAX"] == "4"


def test_workers_get_a_fixed_mmap_threshold_unless_the_operator_says_otherwise() -> None:
    assert worker_command(1, 8, {})[1]["MALLOC_MMAP_THRESHOLD_"] == "262144"
    assert worker_command(1, 8, {"MALLOC_MMAP_THRESHOLD_": "1048576"})[1]["MALLOC_MMAP_THRESHOLD_"] == "1048576"
