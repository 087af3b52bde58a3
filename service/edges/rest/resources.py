"""The REST resources: each parses its request, calls the Api, and serializes the answer.
Errors are raised as they are; the app's handlers turn them into HTTP answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import falcon

from service.edges.api import Access, Api
from service.edges.rest.bodies import discard_body, read_json
from service.edges.rest.openapi import document
from service.logs import redact
from service.storage.jobs import Job, ping
from service.storage.views import job_view, log_view

log = logging.getLogger(__name__)

CSV = "text/csv; charset=utf-8"


class EnqueueResource:
    """POST /enqueue."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue a job: 202 when created, 200 with the job when a key is replayed."""
        body = read_json(req)
        job, created = self.api.enqueue(req.context.access, body, req.get_header("Idempotency-Key"))
        if created:
            accepted(resp, job)
        else:
            resp.media = job_view(job)


def accepted(resp: falcon.Response, job: Job) -> None:
    """202 for a new job: its id and status, and where to follow it."""
    resp.status = falcon.HTTP_202
    resp.location = f"/jobs/{job.id}"
    resp.media = {"job_id": job.id, "status": job.status}


class JobResource:
    """GET /jobs/{job_id}."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job, if the token may see it."""
        resp.media = job_view(self.api.job(req.context.access, job_id))


class JobLogsResource:
    """GET /jobs/{job_id}/logs."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job's log lines, oldest first."""
        resp.media = {"logs": [log_view(line) for line in self.api.logs(req.context.access, job_id)]}


class JobRejectsResource:
    """GET /jobs/{job_id}/rejects?after=&limit=."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """One page of the job's rejected rows by source_row, and the `after` of the next page."""
        after, limit = req.get_param("after"), req.get_param("limit")
        rejects, following = self.api.rejects_page(req.context.access, job_id, after, limit)
        resp.media = {"rejects": rejects, "next": following}


class JobRejectsCsvResource:
    """GET /jobs/{job_id}/rejects.csv."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The job's rejects.csv, streamed as the customer database yields it."""
        job = self.api.job(req.context.access, job_id)
        pieces = self.api.rejects_csv(req.context.access, job.id)
        # The first piece is read before the answer starts: an unreachable customer database is
        # then a 503, not a 200 cut short. Later failures can only cut the stream (see _streamed).
        first = next(pieces, b"")
        resp.content_type = CSV
        resp.set_header("Content-Disposition", f'attachment; filename="{job.id}-rejects.csv"')
        resp.stream = _streamed(first, pieces, job.id)


def _streamed(first: bytes, pieces: Iterator[bytes], job_id: str) -> Iterator[bytes]:
    """The first piece, then the rest; a failure once the status is sent is logged and cuts the answer.

    Re-raising makes the server close the connection without the last chunk, so the client
    sees an incomplete download rather than a short file that looks whole. A client that
    leaves early closes this generator, and with it the customer database's cursor.
    """
    try:
        yield first
        yield from pieces
    except Exception as exc:
        log.error("job %s: rejects.csv cut short: %s", job_id, redact(str(exc)))
        raise
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


class JobChangeResource:
    """POST /jobs/{job_id}/cancel and POST /jobs/{job_id}/undo: one Api call, no body needed."""

    def __init__(self, change: Callable[[Access, str], tuple[Job, bool]]) -> None:
        self.change = change

    def on_post(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """200 with the job once the change is complete, 202 while a worker completes it."""
        discard_body(req)
        job, complete = self.change(req.context.access, job_id)
        if not complete:
            resp.status = falcon.HTTP_202
            resp.location = f"/jobs/{job.id}"
        resp.media = job_view(job)


class JobReplayResource:
    """POST /jobs/{job_id}/replay: no body needed."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """202 with a new job that validates the job's stored rejects again, like an enqueue;
        200 with the replay job already queued, running or succeeded (asked twice)."""
        discard_body(req)
        job, created = self.api.replay_job(req.context.access, job_id)
        if created:
            accepted(resp, job)
        else:
            resp.media = job_view(job)


class JobListResource:
    """GET /jobs?customer_id=&status=&limit=."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Jobs newest first, only of customers the token may see."""
        jobs = self.api.list_jobs(
            req.context.access, req.get_param("customer_id"), req.get_param("status"), req.get_param("limit")
        )
        resp.media = {"jobs": [job_view(job) for job in jobs]}


class HealthResource:
    """GET /healthz: the process answers; no database involved."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always ok while the process serves."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """GET /readyz: the app database answers."""

    public = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 when the app DB answers; a failure becomes 503 in the handler."""
        ping(self.dsn)
        resp.media = {"status": "ready"}


class OpenApiResource:
    """GET /openapi.json."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The OpenAPI document."""
        resp.media = document()
