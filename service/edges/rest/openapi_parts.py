"""What every part of the OpenAPI document shares: media types, the body limit, the error
answers' shape and texts. openapi.py puts the document together; openapi_uploads.py holds the
tus routes and presign (SPEC 19)."""

from __future__ import annotations

from typing import Any

from service.edges.rest.schemas import ref

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
CSV = "text/csv"

ERRORS = {
    400: "The request is refused; `field` names the offending field when there is one.",
    401: "No bearer token, or one that is not configured.",
    403: "The token may not act for that customer.",
    404: "No such job, or a job of a customer the token may not see.",
    409: "A conflict, named in the message: the Idempotency-Key was used before with another request "
    "body, or the job's state does not allow the change (cancelling a finished job; undoing a job that "
    "did not succeed, one whose history is past retention, or one later jobs changed: undo those first; "
    "replaying a job that has not ended or has no rejected rows).",
    413: f"The body is over {MAX_BODY_BYTES} bytes.",
    415: "The Content-Type is not JSON.",
    500: "An unexpected fault; the server logged it.",
    503: "A database the answer needs is not reachable right now (the app database; for rejects, undo and "
    "replay also the customer's); try again.",
}


def json_answer(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response object with a JSON body."""
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def error_answers(*codes: int, texts: dict[int, str] | None = None) -> dict[str, Any]:
    """Error responses for the given status codes, all with the one error shape (texts: a route's
    own descriptions of some)."""
    described = {**ERRORS, **(texts or {})}
    responses = {str(code): json_answer(ref("Error"), described[code]) for code in codes}
    if 401 in codes:
        bearer = {"description": "Always `Bearer`.", "schema": {"type": "string", "const": "Bearer"}}
        responses["401"]["headers"] = {"WWW-Authenticate": bearer}
    return responses
