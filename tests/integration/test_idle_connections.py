"""Connections kept between transactions: reused, capped, checked after a server restart's
worth of idleness, closed when idle too long, never shared with a forked child."""

from __future__ import annotations

import os

import psycopg2

from service.storage.db import IdleConnections, connect
from tests.conftest import Databases


def backend(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = int(cur.fetchone()[0])
    conn.rollback()
    return pid


def test_a_connection_is_reused_and_the_idle_ones_are_capped(databases: Databases) -> None:
    dsn = databases.create("idle")
    idle = IdleConnections(per_dsn=2, total=3)
    first = connect(dsn)
    pid = backend(first)
    idle.give(dsn, first)
    again = idle.take(dsn)
    assert again is first and backend(again) == pid
    extra = [connect(dsn) for _ in range(3)]
    for conn in [again, *extra]:
        idle.give(dsn, conn)
    kept = [idle.take(dsn) for _ in range(3)]
    assert sum(conn is not None for conn in kept) == 2  # per_dsn
    assert sum(conn.closed == 0 for conn in [again, *extra]) == 2  # the others were closed
    for conn in kept:
        if conn is not None:
            conn.close()


def test_a_dead_connection_is_not_handed_out_and_an_old_one_is_closed(databases: Databases) -> None:
    dsn = databases.create("idle")
    idle = IdleConnections(per_dsn=2, total=4, max_age=60.0, check_after=0.0)
    conn = connect(dsn)
    pid = backend(conn)
    idle.give(dsn, conn)
    killer = connect(dsn, autocommit=True)
    with killer.cursor() as cur:  # as a server restart would
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    killer.close()
    assert idle.take(dsn) is None and conn.closed
    old = connect(dsn)
    aging = IdleConnections(per_dsn=2, total=4, max_age=0.0)
    aging.give(dsn, old)
    aging.give(dsn, connect(dsn))  # giving prunes the idle ones past max_age
    assert old.closed
    aging.close_all()


def test_a_connection_in_a_transaction_is_not_kept(databases: Databases) -> None:
    dsn = databases.create("idle")
    idle = IdleConnections()
    conn = connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")  # a transaction is open
    idle.give(dsn, conn)
    assert conn.closed and idle.take(dsn) is None


def test_a_forked_child_does_not_use_its_parents_connections(databases: Databases) -> None:
    dsn = databases.create("idle")
    idle = IdleConnections()
    idle.give(dsn, connect(dsn))
    pid = os.fork()
    if pid == 0:  # the child: the parent's socket is not for it
        os._exit(0 if idle.take(dsn) is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert idle.take(dsn) is not None  # the parent still has it
