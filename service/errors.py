"""Every error the service raises derives from ImportServiceError.

Three kinds of failure have three homes: a bad row is data (RowError, logged,
the job goes on); a bad file or refused request is permanent (JobFailed,
RequestRefused); a dropped connection is retryable (Retryable).
"""

from __future__ import annotations

from dataclasses import dataclass


class ImportServiceError(Exception):
    """Root of every error raised by the service."""


class ConfigError(ImportServiceError):
    """The configuration cannot be used; the message names the file and the problem."""


class RequestRefused(ImportServiceError):
    """A request is refused before any job exists (bad field, unknown customer...)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownProduct(RequestRefused):
    """The product type names no schema in the registry."""


class JobFailed(ImportServiceError):
    """The job cannot succeed: a sentence a customer can act on. Never retried."""


class FileRejected(JobFailed):
    """The file itself is unusable (encoding, structure, header)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class LimitExceeded(FileRejected):
    """A configured size limit was passed; the message names the limit."""


class CustomerDBRefused(JobFailed):
    """The customer's database answered but refused a statement (its table has another shape...).

    Its text is what a customer reads (no host, port, user or DSN); `detail`, the driver's own
    words without passwords, is for the operator's log only."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


class BlobRefused(JobFailed):
    """The blob URI is unsupported, outside the customer's area, or not a regular file."""


class JobConflict(ImportServiceError):
    """The job's state does not allow the operation (cancel a finished job, undo a failed one...)."""


class JobCancelled(ImportServiceError):
    """The job was cancelled while a stage ran: the stage stops and leaves nothing."""


class Retryable(ImportServiceError):
    """A transient fault (a dropped connection, an unreachable database)."""


class CustomerDBUnavailable(Retryable):
    """The customer's database cannot be reached right now.

    Its text is what a customer reads (no host, port, user or DSN); `detail`, the driver's own
    words without passwords, is for the operator's log only."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


class BlobUnavailable(CustomerDBUnavailable):
    """The customer's blob store (S3, Azure, GCS) cannot be reached right now; retried like the customer's
    database, then the job fails. The message names the endpoint, never credentials."""


@dataclass(frozen=True)
class RowError:
    """One problem with one record: data, not an exception."""

    source_row: int
    field: str | None
    message: str
