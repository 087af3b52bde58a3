"""`importctl feed ...`: the feeds of SPEC 20 for the operator, through the same Api calls as
REST and gRPC (create, list, show, update, pause, resume, run, list its files, retry a failed
file, delete).

Each command turns its arguments into the request REST would get, so the Api checks it and
refuses it naming the same field; only what exists on the command line alone (`move_to:URI`)
is refused here."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from service.edges.api import OPERATOR, Api
from service.errors import ImportServiceError, RequestRefused
from service.storage.feeds import Feed, FeedFile
from service.storage.views import feed_file_view, feed_view

RECENT_FILES = 10  # files `feed show` lists, as GET /feeds/<id> does
MOVE_TO = "move_to:"
DEFAULT_LIMIT = "100"  # --limit's default in the usage text: `feed files` leaves it out of its next page


class FeedRunStopped(ImportServiceError):
    """A run ended early (its store could not be listed); what it enqueued before stays."""


def command(api: Api, args: dict[str, Any], options: dict[str, Any]) -> None:
    """Do the `feed` command args name and print its outcome; a refusal or failure raises."""
    feed_id = args["FEED"]
    if args["create"]:
        print(api.create_feed(OPERATOR, creation(args, options)).id)
    elif args["list"]:
        found = api.list_feeds(OPERATOR, args["--customer"], args["--limit"])
        if args["--json"]:
            print(json.dumps({"feeds": [feed_view(feed) for feed in found]}, indent=2))
        else:
            for feed in found:
                print(summary(feed))
    elif args["show"]:
        feed, counts, files = api.feed_files(OPERATOR, feed_id, RECENT_FILES)
        print(
            json.dumps(feed_view(feed, counts, files), indent=2) if args["--json"] else described(feed, counts, files)
        )
    elif args["files"]:
        print_files(api, feed_id, args)
    elif args["update"]:
        print("\n".join(settings(api.update_feed(OPERATOR, feed_id, changes(args, options)))))
    elif args["pause"] or args["resume"]:
        print(summary(api.update_feed(OPERATOR, feed_id, {"paused": bool(args["pause"])})))
    elif args["run"]:
        result = api.run_feed(OPERATOR, feed_id)
        print(f"found={result.found} enqueued={result.enqueued}")
        if result.error is not None:
            raise FeedRunStopped(f"the run of feed {feed_id} stopped: {result.error}")
    elif args["retry"]:
        print(api.retry_feed_file(OPERATOR, feed_id, args["VERSION"]).id)
    elif args["delete"]:
        api.delete_feed(OPERATOR, feed_id)
        print(f"deleted feed {feed_id}")


def creation(args: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The body of POST /feeds that `feed create`'s arguments make (the Api checks it)."""
    body: dict[str, Any] = {
        "customer_id": args["--customer"],
        "product_type": args["--product"],
        "prefix_uri": args["--prefix"],
        "options": options,
        "after_success": "keep",
        "paused": bool(args["--paused"]),
    }
    return body | given(args, options)


def changes(args: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The body of PATCH /feeds/<id> that `feed update`'s arguments make: only the fields given
    (options given replace the feed's options, as PATCH does); refused when none is."""
    body = given(args, options)
    if not body:
        raise RequestRefused(
            "give at least one change: --every, --cron, --pattern, --option, --after-success or --expect-every-hours"
        )
    return body


def given(args: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The feed's fields the settings on the command line name, as the API names them."""
    body: dict[str, Any] = {}
    if args["--every"] is not None:
        body["schedule"] = {"every_seconds": _number(args["--every"], int)}
    elif args["--cron"] is not None:
        body["schedule"] = {"cron": args["--cron"]}
    if args["--pattern"] is not None:
        body["pattern"] = args["--pattern"]
    if args["--option"]:
        body["options"] = options
    if args["--after-success"] is not None:
        body["after_success"] = after_success(args["--after-success"])
    if args["--expect-every-hours"] is not None:
        body["expect_every_hours"] = _number(args["--expect-every-hours"], float)
    return body


def print_files(api: Api, feed_id: str, args: dict[str, Any]) -> None:
    """`feed files`: a page of the feed's files, one line each (--json: GET /feeds/<id>/files's
    answer); on stderr, the command for the next page when there is one."""
    state, limit = args["--state"], args["--limit"]
    feed, files, after = api.list_feed_files(OPERATOR, feed_id, state, limit, args["--after"])
    if args["--json"]:
        print(json.dumps({"files": [feed_file_view(file) for file in files], "next": after}, indent=2))
        return
    for file in files:
        print(file_line(feed, file))
    if after is not None:  # on stderr: stdout stays one line per file, for a pipe
        shown_state = f" --state={state}" if state is not None else ""
        shown_limit = f" --limit={limit}" if limit != DEFAULT_LIMIT else ""
        print(
            f"importctl: more files: importctl feed files {feed.id}{shown_state}{shown_limit} --after={after}",
            file=sys.stderr,
        )


def after_success(text: str) -> Any:
    """keep, delete, or move_to:URI as the API names it ({"move_to": URI})."""
    if text in ("keep", "delete"):
        return text
    if text.startswith(MOVE_TO) and len(text) > len(MOVE_TO):
        return {"move_to": text[len(MOVE_TO) :]}
    raise RequestRefused(f"--after-success must be keep, delete or move_to:URI, got {text!r}", field="after_success")


def _number(text: str, kind: type[int] | type[float]) -> Any:
    """The number text spells; else the text, for the Api to refuse with its own words."""
    try:
        return kind(text)
    except ValueError:
        return text


def summary(feed: Feed) -> str:
    """One line per feed: id, what it imports, its state (active, paused, late) and what it watches."""
    state = "paused" if feed.paused else "late" if feed.late else "active"
    return f"{feed.id}  {feed.customer_id}/{feed.product_type}  {state:<6}  {shown(feed.prefix_uri + feed.pattern)}"


def described(feed: Feed, counts: dict[str, int], files: list[FeedFile]) -> str:
    """What `feed show` prints: its settings, counts, then the latest files."""
    lines = settings(feed)
    lines.append("files: " + " ".join(f"{name}={counts[name]}" for name in ("seen", "imported", "failed", "pending")))
    lines.extend(f"  {file_line(feed, file)}" for file in files)
    return "\n".join(lines)


def settings(feed: Feed) -> list[str]:
    """What `feed update` prints (and `feed show` first): the summary line, the schedule, options,
    what becomes of an imported file, when it is late, and its last run."""
    schedule = feed.schedule
    when = f"every {schedule['every_seconds']} s" if "every_seconds" in schedule else f"cron {schedule['cron']} (UTC)"
    next_run = "paused" if feed.paused else f"next run {_time(feed.next_run_at)}"
    lines = [summary(feed), f"schedule: {when}; {next_run}"]
    if feed.options:
        pairs = (
            f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in feed.options.items()
        )
        lines.append(f"options: {shown(' '.join(pairs))}")
    action = feed.after_success
    lines.append(f"after success: {action if isinstance(action, str) else 'move to ' + shown(action['move_to'])}")
    if feed.expect_every_hours is not None:
        late = "late: no new file for" if feed.late else "expects a new file every"
        lines.append(f"{late} {feed.expect_every_hours:g} h (last new file: {_time(feed.last_new_at)})")
    if feed.last_run_at is None:
        lines.append("last run: never")
    else:
        error = f"  error: {shown(feed.last_run_error)}" if feed.last_run_error else ""
        ran = f"found={feed.last_run_found} enqueued={feed.last_run_enqueued}"
        lines.append(f"last run: {_time(feed.last_run_at)}  {ran}{error}")
    return lines


def file_line(feed: Feed, file: FeedFile) -> str:
    """A file of the feed: its version id (for `feed retry`), its job, the job's status, its name
    below the prefix, and why it has no job when it was refused (`feed show` indents it)."""
    name = file.key[len(feed.prefix_uri) :] if file.key.startswith(feed.prefix_uri) else file.key
    status = file.job_status or ("refused" if file.job_id is None else "unknown")
    error = f"  error: {shown(file.error)}" if file.error else ""
    return f"{file.version_id}  {file.job_id or '-':<36}  {status:<9}  {shown(name)}{error}"


def shown(text: str) -> str:
    """Text from a customer's store or request, with no control characters reaching the terminal."""
    return text if text.isprintable() else ascii(text)


def _time(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(timespec="seconds")
