"""GET /ui: the status page, one HTML file with inline script and style (ui.html); and
GET /ui/tus.min.js: the tus client its upload form sends files with (static/, vendored).

Both are public (SPEC 4); the page's calls to the JSON API carry the token typed into it.
A Content-Security-Policy keeps the page to its own inline code, scripts of this origin (the
vendored client) and this origin's API."""

from __future__ import annotations

from pathlib import Path

import falcon

PAGE = Path(__file__).with_name("ui.html")
# tus-js-client's browser bundle; static/README.md names its version and sha256.
TUS_SCRIPT = Path(__file__).with_name("static") / "tus.min.js"
POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The script changes only when it is vendored again: browsers may keep it an hour.
SCRIPT_CACHE = "public, max-age=3600"


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


class TusScriptResource:
    """GET /ui/tus.min.js: tus-js-client for the page's upload form (read once per process)."""

    public = True

    def __init__(self) -> None:
        self.script = TUS_SCRIPT.read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The script, as JavaScript (nosniff: a browser runs it as nothing else)."""
        resp.content_type = "text/javascript; charset=utf-8"
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Cache-Control", SCRIPT_CACHE)
        resp.data = self.script
