"""`importctl upload FILE`: hand a local file to the REST server over tus (SPEC 19), with the tus
project's own client (tuspy), resuming where an earlier run stopped (Ctrl-C, a dropped
connection): the upload's URL is kept, per file and server, in a small file under the user's
cache folder, and found again by the file's SHA-256, size, customer and server.

Each request carries CHUNK_BYTES with their SHA-256 (Upload-Checksum), so a run cut off loses at
most the request it was in, and bytes the server did not get whole are never kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import requests
from tusclient import client as tus
from tusclient.exceptions import TusCommunicationError
from tusclient.fingerprint.interface import Fingerprint
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

from service.errors import ImportServiceError, RequestRefused

CHUNK_BYTES = 8 * 1024 * 1024
TOKEN_VARIABLE = "IMPORT_TOKEN"  # the bearer token, from the environment (never on a command line)
_FINAL = ("succeeded", "failed", "cancelled", "undone")


class UploadFailed(ImportServiceError):
    """The server refused the upload or could not be reached (its message, never the token)."""


class _Sha256Uploader(Uploader):
    """tuspy's uploader with SHA-256 checksums (it sends SHA-1 by default)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


class _WholeFile(Fingerprint):
    """Finds an earlier upload of the same bytes for the same customer and server (tuspy's own
    fingerprint hashes only the first 64 KiB: two files alike there would be mixed up)."""

    def __init__(self, customer: str, url: str) -> None:
        self.prefix = f"{customer}\n{url}\n"
        self._known: dict[tuple[str, int, int], str] = {}  # tuspy asks several times per run

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        info = os.fstat(fs.fileno())
        seen = (str(getattr(fs, "name", "")), info.st_size, info.st_mtime_ns)
        if seen not in self._known:
            digest = hashlib.sha256(self.prefix.encode())
            size = 0
            while block := fs.read(1024 * 1024):
                digest.update(block)
                size += len(block)
            fs.seek(0)
            self._known[seen] = f"sha256-{digest.hexdigest()}-{size}"
        return self._known[seen]


def state_file() -> Path:
    """Where the URLs of unfinished uploads are kept between runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "importctl" / "tus-uploads.json"


def headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_VARIABLE)
    return {"Authorization": f"Bearer {token}"} if token else {}


def upload(path: Path, customer: str, base_url: str, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Upload the file (resuming an earlier run's upload of it); its upload id."""
    if not path.is_file():
        raise RequestRefused(f"{path} is not a readable regular file", field="file")
    endpoint = f"{base_url.rstrip('/')}/uploads"
    storage_path = state_file()
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(str(storage_path))
    fingerprint = _WholeFile(customer, endpoint)
    try:
        client = tus.TusClient(endpoint, headers=headers())

        def uploader() -> Uploader:
            return _Sha256Uploader(
                file_path=str(path),
                client=client,
                chunk_size=chunk_bytes,
                metadata={"filename": path.name, "customer_id": customer},
                store_url=True,
                url_storage=storage,
                fingerprinter=fingerprint,
                upload_checksum=True,
            )

        with path.open("rb") as fh:
            key = fingerprint.get_fingerprint(fh)
        try:
            sender = uploader()
        except TusCommunicationError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            storage.remove_item(key)  # the earlier upload expired or was deleted: start again
            sender = uploader()
        if sender.url and sender.offset:
            print(f"resuming at {sender.offset:,} of {sender.get_file_size():,} bytes", file=sys.stderr)
        sender.upload()
        url = sender.url
        storage.remove_item(key)
    except TusCommunicationError as exc:
        raise UploadFailed(_said(exc)) from None
    except requests.RequestException as exc:
        raise UploadFailed(f"cannot reach {endpoint}: {type(exc).__name__}") from None
    finally:
        storage.close()
    return str(url).rstrip("/").rsplit("/", 1)[1]


def _said(exc: TusCommunicationError) -> str:
    """The server's own words for a refused request (its JSON error message), with the status."""
    status = getattr(exc, "status_code", None)
    content = getattr(exc, "response_content", None) or b""
    try:
        message = json.loads(content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = str(exc)
    return f"the server refused the upload ({status}): {message}" if status else f"upload failed: {message}"


def enqueue(base_url: str, body: dict[str, Any]) -> str:
    """POST /enqueue through the REST server; the new job's id."""
    answer = _call("POST", f"{base_url.rstrip('/')}/enqueue", json=body)
    return str(answer["job_id"])


def wait(base_url: str, job_id: str) -> dict[str, Any]:
    """Poll GET /jobs/<id> until the job ends; its view."""
    while True:
        job = _call("GET", f"{base_url.rstrip('/')}/jobs/{job_id}")
        if job["status"] in _FINAL:
            return job
        time.sleep(0.5)


def _call(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        answer = requests.request(method, url, headers=headers(), timeout=60, **kwargs)
    except requests.RequestException as exc:
        raise UploadFailed(f"cannot reach {url}: {type(exc).__name__}") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if answer.status_code == 400:
            raise RequestRefused(str(error.get("message", answer.reason)), field=error.get("field"))
        raise UploadFailed(f"{method} {url} answered {answer.status_code}: {error.get('message', answer.reason)}")
    return dict(body)
