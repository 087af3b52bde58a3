"""Entry point: `gunicorn service.rest:app` (SPEC 9) serves the REST edge, service.edges.rest.app."""

from __future__ import annotations

from typing import Any

from service.edges.rest import app as _rest


def __getattr__(name: str) -> Any:
    """`app` is built on first access by the edge (so importing this module needs no config)."""
    if name == "app":
        return _rest.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
