"""The REST routes of feeds (SPEC 20): /feeds, /feeds/{feed_id}, its run, its files and their retry.
Each parses its request, calls the Api and serializes the answer (storage.views.feed_view)."""

from __future__ import annotations

import falcon

from service.edges.api import Api
from service.edges.rest.bodies import discard_body, read_json
from service.edges.rest.resources import accepted
from service.storage.views import feed_file_view, feed_view


class FeedsResource:
    """GET /feeds?customer_id=&limit=, POST /feeds."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The feeds the token may see, oldest first."""
        found = self.api.list_feeds(req.context.access, req.get_param("customer_id"), req.get_param("limit"))
        resp.media = {"feeds": [feed_view(feed) for feed in found]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a feed: 201 with its view; its first run is due at once."""
        feed = self.api.create_feed(req.context.access, read_json(req))
        resp.status = falcon.HTTP_201
        resp.location = f"/feeds/{feed.id}"
        resp.media = feed_view(feed)


class FeedResource:
    """GET, PATCH and DELETE /feeds/{feed_id}."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, feed_id: str) -> None:
        """The feed, its counts of files and its latest files with their jobs."""
        feed, counts, files = self.api.feed_files(req.context.access, feed_id)
        resp.media = feed_view(feed, counts, files)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, feed_id: str) -> None:
        """Pause, resume or change the feed: its view as it now is."""
        resp.media = feed_view(self.api.update_feed(req.context.access, feed_id, read_json(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, feed_id: str) -> None:
        """Delete the feed and its ledger (its jobs and files stay): 204."""
        discard_body(req)  # none is needed; one sent is read, so the connection stays usable
        self.api.delete_feed(req.context.access, feed_id)
        resp.status = falcon.HTTP_204


class FeedRunResource:
    """POST /feeds/{feed_id}/run."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response, feed_id: str) -> None:
        """Run the feed now: what the run found and enqueued, and the feed as it then is."""
        discard_body(req)
        result = self.api.run_feed(req.context.access, feed_id)
        feed, counts, files = self.api.feed_files(req.context.access, feed_id)
        resp.media = {
            "found": result.found,
            "enqueued": result.enqueued,
            "error": result.error,
            "feed": feed_view(feed, counts, files),
        }


class FeedFilesResource:
    """GET /feeds/{feed_id}/files?state=&limit=&after=."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, feed_id: str) -> None:
        """A page of the feed's files, newest first; `next` is the `after` of the next page."""
        _, files, after = self.api.list_feed_files(
            req.context.access, feed_id, req.get_param("state"), req.get_param("limit"), req.get_param("after")
        )
        resp.media = {"files": [feed_file_view(file) for file in files], "next": after}


class FeedFileRetryResource:
    """POST /feeds/{feed_id}/files/{version}/retry."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response, feed_id: str, version: str) -> None:
        """Import a failed file of the feed again: 202 with the new job."""
        discard_body(req)
        accepted(resp, self.api.retry_feed_file(req.context.access, feed_id, version))
