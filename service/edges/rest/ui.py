"""GET /ui: the status page, one HTML file with inline script and style (service/ui.html).

The page itself is public (SPEC 4); its calls to the JSON API carry the token typed into it.
A Content-Security-Policy keeps it to its own inline code and this origin's API."""

from __future__ import annotations

from pathlib import Path

import falcon

PAGE = Path(__file__).with_name("ui.html")
POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class UiResource:
    """GET /ui: the page (read once per process)."""

    public = True

    def __init__(self) -> None:
        self.page = PAGE.read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The status page."""
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Content-Security-Policy", POLICY)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self.page
