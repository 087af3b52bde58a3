"""Request bodies at the REST edge: read JSON within the body limit, and drop what a route
does not read, so that a refused or ignored body never makes the kernel reset the
connection before the client reads the answer.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import falcon

from service.edges.rest.openapi import MAX_BODY_BYTES
from service.errors import RequestRefused

_READ_CHUNK = 64 * 1024
DRAIN_BYTES = 8 * 1024 * 1024  # what a refused or ignored body may cost us to read and drop


def read_json(req: falcon.Request) -> Any:
    """The request body parsed as JSON; 415, 413 or 400 (RequestRefused) when it cannot be."""
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type != falcon.MEDIA_JSON and not content_type.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(description="the body must be JSON (Content-Type: application/json)")
    raw = read_body(req, MAX_BODY_BYTES)
    if not raw.strip():
        raise RequestRefused("the request body is empty; send a JSON object", field=None)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise RequestRefused(f"malformed JSON: {exc}", field=None) from None


def read_body(req: falcon.Request, limit: int) -> bytes:
    """Read at most limit bytes of body; 413 when the declared or the actual size is larger."""
    length = req.content_length
    stream = _body_stream(req)
    if stream is None:
        return b""
    if length is not None and length > limit:
        _refuse_too_large(stream, limit, length)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        _refuse_too_large(stream, limit, length)
    return b"".join(chunks)


def discard_body(req: falcon.Request) -> None:
    """Read and drop a body the route has no use for (clients often send `{}`), up to DRAIN_BYTES.

    Unread data would make the kernel reset the connection when the worker closes it, and the
    client could lose the answer (see _refuse_too_large).
    """
    stream = _body_stream(req)
    dropped = 0
    while stream is not None and dropped < DRAIN_BYTES and (chunk := stream.read(_READ_CHUNK)):
        dropped += len(chunk)


def _body_stream(req: falcon.Request) -> Any:
    """The stream a body can be read from safely, or None when the request has no body."""
    if req.content_length is not None:
        return req.bounded_stream
    if req.env.get("wsgi.input_terminated"):
        # A chunked body has no Content-Length; the server marks its end, so reading is safe.
        return req.stream
    return None


def _refuse_too_large(stream: Any, limit: int, length: int | None) -> NoReturn:
    """Raise 413, first dropping the rest of a moderately large body.

    The worker closes the connection after answering; unread data makes the kernel reset it,
    and a client still sending would then never read the 413. Past DRAIN_BYTES, it may not.
    """
    if length is None or length <= DRAIN_BYTES:
        dropped = 0
        while dropped < DRAIN_BYTES and (chunk := stream.read(_READ_CHUNK)):
            dropped += len(chunk)
    raise falcon.HTTPContentTooLarge(description=f"the request body is over {limit} bytes")
