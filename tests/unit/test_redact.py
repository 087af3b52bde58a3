"""Passwords never reach a log or a customer (service.logs.redact), and a refusal's reason keeps
no connection detail (service.storage.customer_db.refusal_reason)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
import pytest

from service.logs import describe, redact
from service.storage.customer_db import refusal_reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db password=s3cret user=u", "host=db password=*** user=u"),
        ("host=db password='a b' user=u", "host=db password=*** user=u"),
        ('host=db password="a b" user=u', "host=db password=*** user=u"),
        ("host=db password='a\\'b c' user=u", "host=db password=*** user=u"),
        ("host=db password = 'a b' user=u", "host=db password = *** user=u"),
        ("dbname=x password='never closed", "dbname=x password=***"),
        ("password='ends in a backslash\\", "password=***"),
        ("PGPASSWORD=s3cret importctl", "PGPASSWORD=*** importctl"),
        ('{"dsn": "x", "password": "a b"}', '{"dsn": "x", "password": ***}'),
        ("postgresql://importer:s3cret@db:5432/acme", "postgresql://importer:***@db:5432/acme"),
        ("postgres://importer:p@ss%20w@rd@db/acme", "postgres://importer:***@db/acme"),  # (a URI encodes spaces)
        ("postgresql://:s3cret@db/acme", "postgresql://:***@db/acme"),
        ("postgresql://u@db/acme?password=s3cret&sslmode=require", "postgresql://u@db/acme?password=***"),
        # Nothing to hide: left as it is.
        ("postgresql://db:5432/acme", "postgresql://db:5432/acme"),
        ('FATAL:  password authentication failed for user "u"', 'FATAL:  password authentication failed for user "u"'),
    ],
)
def test_redact_hides_every_spelling_of_a_password(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_describe_keeps_every_address_libpq_tried_without_the_password() -> None:
    error = psycopg2.OperationalError(
        'connection to server at "localhost" (::1), port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "localhost" (127.0.0.1), port 5432 failed: FATAL:  role "x" does not exist\n'
    )
    said = describe(error)
    assert "(::1)" in said and 'role "x" does not exist' in said and "\n" not in said


@dataclass
class Diag:
    message_primary: str | None


@dataclass
class Refusal:
    """A driver error as refusal_reason reads it (psycopg2's own cannot be built with a pgcode)."""

    diag: Diag
    pgcode: str | None


DSN = "host=10.0.3.7 port=6543 dbname=acme_prod user=importer password='a b'"


@pytest.mark.parametrize(
    ("primary", "code", "expected"),
    [
        ('column "job_id" does not exist', "42703", 'column "job_id" does not exist (SQLSTATE 42703)'),
        ("permission denied for table users", "42501", "permission denied for table users (SQLSTATE 42501)"),
        ("no writes by importer on acme_prod", "P0001", "no writes by *** on *** (SQLSTATE P0001)"),
        ("cannot reach 10.0.3.7:6543", "P0001", "cannot reach ***:*** (SQLSTATE P0001)"),
        (
            "link failed: host=db.internal port 5432 password='a b'",
            "08001",
            "link failed: *** *** password=*** (SQLSTATE 08001)",
        ),
        (None, "40001", "SQLSTATE 40001"),
    ],
)
def test_a_refusals_reason_keeps_the_servers_words_but_no_connection_detail(
    primary: str | None, code: str, expected: str
) -> None:
    assert refusal_reason(Refusal(Diag(primary), code), DSN) == expected  # type: ignore[arg-type]
