"""Uploads (SPEC 19): tus 1.0 at /uploads through a real gunicorn, with the tus project's own
Python client (tuspy) and by hand where a client would not misbehave on purpose; the file
then imported by upload_id through real workers."""

from __future__ import annotations

import base64
import hashlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tusclient import client as tus

from tests.conftest import ROOT, Databases, query, until
from tests.e2e.conftest import Stack, make_stack

TUS = {"Tus-Resumable": "1.0.0"}


def users_csv(rows: int) -> bytes:
    return b"external_id,email\n" + b"".join(b"u%d,user%d@example.com\n" % (i, i) for i in range(rows))


@dataclass
class Server:
    stack: Stack
    url: str

    def headers(self, token: str = "tok-acme", **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **TUS, **more}

    def create(self, length: int, token: str = "tok-acme", **metadata: str) -> str:
        """A new upload's URL."""
        answer = requests.post(
            f"{self.url}/uploads",
            headers=self.headers(token, **{"Upload-Length": str(length), "Upload-Metadata": encode(metadata)}),
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        return f"{self.url}{answer.headers['Location']}"

    def patch(self, url: str, offset: int, body: bytes, token: str = "tok-acme", **headers: str) -> requests.Response:
        more = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **headers}
        return requests.patch(url, data=body, headers=self.headers(token, **more), timeout=60)

    def head(self, url: str, token: str = "tok-acme") -> requests.Response:
        return requests.head(url, headers=self.headers(token), timeout=30)

    def enqueue(self, body: dict[str, Any], token: str = "tok-acme") -> requests.Response:
        return requests.post(f"{self.url}/enqueue", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def job(self, job_id: str, token: str = "tok-acme") -> dict[str, Any]:
        answer = requests.get(f"{self.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def finished_job(self, job_id: str) -> dict[str, Any]:
        until(lambda: self.job(job_id)["status"] not in ("queued", "running"), timeout=120)
        return self.job(job_id)


def encode(metadata: dict[str, str]) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items())


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for stack in make_stack(databases, tmp_path_factory, MAX_FILE_BYTES=str(64 * 1024 * 1024)):
        _, url = stack.gunicorn()
        yield Server(stack, url)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_sent_by_tuspy_in_chunks_is_imported_by_upload_id(server: Server, tmp_path: Path) -> None:
    data = users_csv(5000)
    source = tmp_path / "people list.csv"
    source.write_bytes(data)
    client = tus.TusClient(f"{server.url}/uploads", headers={"Authorization": "Bearer tok-acme"})
    uploader = client.uploader(str(source), chunk_size=16 * 1024, metadata={"filename": source.name})
    uploader.upload()
    head = server.head(uploader.url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Expires" not in head.headers  # finished: it no longer expires
    stored = server.stack.blob_root / "acme" / "uploads" / f"{upload_id(uploader.url)}-people list.csv"
    assert sha256(stored) == hashlib.sha256(data).hexdigest()
    answer = server.enqueue({"customer_id": "acme", "product_type": "users", "upload_id": upload_id(uploader.url)})
    assert answer.status_code == 202, answer.text
    job = server.finished_job(answer.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["rows_inserted"] == 5000
    assert job["upload"] == {"id": upload_id(uploader.url), "filename": "people list.csv"}
    rows = query(server.stack.customer_dsns["acme"], "SELECT count(*) FROM users WHERE job_id = %s", (job["job_id"],))
    assert rows == [(5000,)]
    # A finished upload can be imported again (another mode, another product...).
    again = server.enqueue(
        {
            "customer_id": "acme",
            "product_type": "users",
            "upload_id": upload_id(uploader.url),
            "options": {"mode": "upsert"},
        }
    )
    assert again.status_code == 202, again.text
    assert server.finished_job(again.json()["job_id"])["status"] == "succeeded"


def test_tuspy_with_checksums_and_one_request_for_the_whole_file(server: Server, tmp_path: Path) -> None:
    data = users_csv(300)
    source = tmp_path / "whole.csv"
    source.write_bytes(data)
    client = tus.TusClient(f"{server.url}/uploads", headers={"Authorization": "Bearer tok-acme"})
    uploader = client.uploader(str(source), metadata={"filename": "whole.csv"}, upload_checksum=True)
    uploader.upload()
    assert server.head(uploader.url).headers["Upload-Offset"] == str(len(data))


@contextmanager
def patch_in_flight(server: Server, url: str, offset: int, body: bytes, sent: int) -> Iterator[None]:
    """A PATCH that announces all of body and has sent its first `sent` bytes; the connection
    drops when the block ends."""
    path = "/" + url.split("/", 3)[3]
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer tok-acme\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:sent])
        time.sleep(0.5)  # the server has read what came (and holds the upload)
        yield


def cut_off_patch(server: Server, url: str, offset: int, body: bytes, sent: int) -> None:
    """A PATCH that announces all of body but sends only its first `sent` bytes, then drops."""
    with patch_in_flight(server, url, offset, body, sent):
        pass


def test_a_dropped_request_resumes_from_the_bytes_the_server_stored(server: Server, tmp_path: Path) -> None:
    data = users_csv(40_000)
    url = server.create(len(data), filename="dropped.csv")
    cut_off_patch(server, url, 0, data, 300_000)
    until(lambda: int(server.head(url).headers["Upload-Offset"]) > 0, timeout=30)
    stored = int(server.head(url).headers["Upload-Offset"])
    assert 0 < stored <= 300_000
    # tuspy resumes at the server's offset, not from zero.
    source = tmp_path / "dropped.csv"
    source.write_bytes(data)
    client = tus.TusClient(f"{server.url}/uploads", headers={"Authorization": "Bearer tok-acme"})
    uploader = client.uploader(str(source), url=url, chunk_size=256 * 1024)
    assert uploader.offset == stored
    uploader.upload()
    final = server.stack.blob_root / "acme" / "uploads" / f"{upload_id(url)}-dropped.csv"
    assert sha256(final) == hashlib.sha256(data).hexdigest()
    answer = server.enqueue({"customer_id": "acme", "product_type": "users", "upload_id": upload_id(url)})
    job = server.finished_job(answer.json()["job_id"])
    assert (job["status"], job["rows_inserted"]) == ("succeeded", 40_000)


def test_a_checksum_that_does_not_match_keeps_nothing(server: Server) -> None:
    data = users_csv(10)
    url = server.create(len(data), filename="sum.csv")
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    answer = server.patch(url, 0, data, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert answer.status_code == 460, answer.text
    assert "checksum" in answer.json()["error"]["message"]
    assert server.head(url).headers["Upload-Offset"] == "0"
    right = base64.b64encode(hashlib.sha256(data[:100]).digest()).decode()
    answer = server.patch(url, 0, data[:100], **{"Upload-Checksum": f"sha256 {right}"})
    assert answer.status_code == 204, answer.text
    assert answer.headers["Upload-Offset"] == "100"
    unknown = server.patch(url, 100, data[100:], **{"Upload-Checksum": "crc32 AAAA"})
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "upload_checksum"


def test_another_customers_upload_is_not_found_and_cannot_be_imported(server: Server) -> None:
    data = users_csv(3)
    url = server.create(len(data), filename="mine.csv")
    assert server.head(url, token="tok-globex").status_code == 404
    assert server.patch(url, 0, data, token="tok-globex").status_code == 404
    assert requests.delete(url, headers=server.headers("tok-globex"), timeout=30).status_code == 404
    assert server.head(url).headers["Upload-Offset"] == "0"  # nothing of theirs landed
    unfinished = server.enqueue({"customer_id": "acme", "product_type": "users", "upload_id": upload_id(url)})
    assert unfinished.status_code == 400
    assert unfinished.json()["error"]["field"] == "upload_id"
    assert "not finished" in unfinished.json()["error"]["message"]
    assert server.patch(url, 0, data).status_code == 204
    theirs = server.enqueue(
        {"customer_id": "globex", "product_type": "users", "upload_id": upload_id(url)}, token="tok-globex"
    )
    assert theirs.status_code == 400 and theirs.json()["error"]["field"] == "upload_id"
    unknown = server.enqueue(
        {"customer_id": "acme", "product_type": "users", "upload_id": "00000000-0000-0000-0000-000000000000"}
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "upload_id"
    both = server.enqueue(
        {"customer_id": "acme", "product_type": "users", "upload_id": upload_id(url), "blob_uri": "file:///x"}
    )
    assert both.status_code == 400 and both.json()["error"]["field"] == "upload_id"
    # A token of several customers names one in the metadata.
    refused = requests.post(
        f"{server.url}/uploads", headers=server.headers("tok-admin", **{"Upload-Length": "3"}), timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "customer_id"
    assert server.create(3, token="tok-admin", customer_id="globex", filename="g.csv")
    forbidden = requests.post(
        f"{server.url}/uploads",
        headers=server.headers(
            "tok-acme", **{"Upload-Length": "3", "Upload-Metadata": encode({"customer_id": "globex"})}
        ),
        timeout=30,
    )
    assert forbidden.status_code == 403


def test_termination_deletes_the_upload_and_its_bytes(server: Server) -> None:
    data = users_csv(3)
    url = server.create(len(data), filename="gone.csv")
    assert server.patch(url, 0, data[:10]).status_code == 204
    part = server.stack.blob_root / ".uploads" / "acme" / upload_id(url)
    assert part.stat().st_size == 10
    assert requests.delete(url, headers=server.headers(), timeout=30).status_code == 204
    assert server.head(url).status_code == 404
    assert not part.exists()


def test_protocol_errors_name_the_problem(server: Server) -> None:
    options = requests.options(f"{server.url}/uploads", timeout=30)  # no token: a browser's preflight
    assert options.status_code == 204
    assert options.headers["Tus-Version"] == "1.0.0"
    assert set(options.headers["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert options.headers["Tus-Max-Size"] == str(64 * 1024 * 1024)
    assert "sha256" in options.headers["Tus-Checksum-Algorithm"]
    no_token = requests.post(f"{server.url}/uploads", headers={**TUS, "Upload-Length": "3"}, timeout=30)
    assert no_token.status_code == 401
    old = requests.post(
        f"{server.url}/uploads",
        headers={"Authorization": "Bearer tok-acme", "Tus-Resumable": "0.2.2", "Upload-Length": "3"},
        timeout=30,
    )
    assert old.status_code == 412 and old.headers["Tus-Version"] == "1.0.0"
    too_big = requests.post(
        f"{server.url}/uploads", headers=server.headers(**{"Upload-Length": str(64 * 1024 * 1024 + 1)}), timeout=30
    )
    assert too_big.status_code == 413 and "max_file_bytes" in too_big.json()["error"]["message"]
    # A value that is not base64, a key that is not ASCII, a key twice, bytes that are not UTF-8.
    for bad in ("a b c", "filename not-base64!", "két YQ==", "x YQ==,x YQ==", "x /w=="):
        answer = requests.post(
            f"{server.url}/uploads",
            headers=server.headers(**{"Upload-Length": "3", "Upload-Metadata": bad}),
            timeout=30,
        )
        assert answer.status_code in (400,), (bad, answer.status_code, answer.text)
        assert answer.json()["error"]["field"] == "upload_metadata", bad
    missing = requests.post(f"{server.url}/uploads", headers=server.headers(), timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "upload_length"
    url = server.create(10, filename="x.csv")
    wrong_type = requests.patch(
        url, data=b"abc", headers=server.headers(**{"Upload-Offset": "0", "Content-Type": "text/csv"}), timeout=30
    )
    assert wrong_type.status_code == 415
    assert server.patch(url, 5, b"abc").status_code == 409
    assert server.patch(url, 0, b"x" * 11).status_code == 413
    assert server.head(url).headers["Upload-Offset"] == "0"
    assert server.head(f"{server.url}/uploads/not-an-id").status_code == 404


def test_creation_with_upload_stores_the_first_bytes_at_once(server: Server) -> None:
    data = users_csv(20)
    answer = requests.post(
        f"{server.url}/uploads",
        data=data,
        headers=server.headers(
            **{
                "Upload-Length": str(len(data)),
                "Upload-Metadata": encode({"filename": "at-once.csv"}),
                "Content-Type": "application/offset+octet-stream",
            }
        ),
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["Upload-Offset"] == str(len(data))
    assert answer.json()["finished"] is True


def test_a_second_request_while_one_writes_is_told_the_upload_is_busy(server: Server) -> None:
    data = users_csv(40_000)
    url = server.create(len(data), filename="busy.csv")
    with patch_in_flight(server, url, 0, data, 1000):
        assert server.patch(url, 0, data).status_code == 423


@pytest.fixture(scope="module")
def short_lived(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for stack in make_stack(databases, tmp_path_factory, UPLOAD_EXPIRY_HOURS="0.001"):  # 3.6 s
        _, url = stack.gunicorn()
        yield Server(stack, url)


def test_an_unfinished_upload_expires_and_its_bytes_are_swept(short_lived: Server) -> None:
    data = users_csv(100)
    url = short_lived.create(len(data), filename="late.csv")
    first = short_lived.head(url)
    assert "Upload-Expires" in first.headers
    assert short_lived.patch(url, 0, data[:50]).status_code == 204
    part = short_lived.stack.blob_root / ".uploads" / "acme" / upload_id(url)
    assert part.exists()
    until(lambda: short_lived.head(url).status_code == 404, timeout=30)
    assert short_lived.patch(url, 50, data[50:]).status_code == 404
    until(lambda: not part.exists(), timeout=40)  # the workers' sweep (every 10 s)
    rows = query(short_lived.stack.app_dsn, "SELECT count(*) FROM import_uploads WHERE id = %s", (upload_id(url),))
    assert rows == [(0,)]


# -- importctl upload: the real binary, through the real REST server ----------------------------

IMPORTCTL = str(Path(sys.executable).parent / "importctl")


def importctl_env(server: Server, tmp_path: Path, token: str = "tok-acme") -> dict[str, str]:
    return dict(server.stack.env, IMPORT_TOKEN=token, XDG_CACHE_HOME=str(tmp_path / "cache"))


def test_importctl_upload_and_enqueue_imports_the_file(server: Server, tmp_path: Path) -> None:
    data = users_csv(2000)
    source = tmp_path / "cli users.csv"
    source.write_bytes(data)
    command = [IMPORTCTL, "upload", str(source), "--customer=acme", f"--url={server.url}"]
    command += ["--enqueue", "--product=users", "--wait"]
    result = subprocess.run(
        command, env=importctl_env(server, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    upload, job_id = result.stdout.split()
    final = server.stack.blob_root / "acme" / "uploads" / f"{upload}-cli users.csv"
    assert sha256(final) == hashlib.sha256(data).hexdigest()
    job = server.job(job_id)
    assert (job["status"], job["rows_inserted"], job["upload"]["filename"]) == ("succeeded", 2000, "cli users.csv")
    assert "IMPORT_TOKEN" not in result.stderr and "tok-acme" not in result.stderr + result.stdout
    status = subprocess.run(
        [IMPORTCTL, "status", job_id], env=server.stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and f"upload: cli users.csv ({upload})" in status.stdout, status
    # The same upload again, by id, from importctl enqueue.
    again = subprocess.run(
        [IMPORTCTL, "enqueue", "--customer=acme", "--product=users", f"--upload={upload}", "--wait"],
        env=server.stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert server.job(again.stdout.strip())["upload"] == {"id": upload, "filename": "cli users.csv"}
    theirs = subprocess.run(
        [IMPORTCTL, "enqueue", "--customer=globex", "--product=users", f"--upload={upload}"],
        env=server.stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert theirs.returncode == 2 and "refused (upload_id)" in theirs.stderr, theirs.stderr


def test_importctl_upload_resumes_after_ctrl_c(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("wb") as out:
        out.write(b"external_id,email\n")
        for block in range(36):  # about 58 MB, under the module's max_file_bytes (64 MiB)
            out.write(
                b"".join(b"u%d,user%d@example.com\n" % (i, i) for i in range(block * 50_000, (block + 1) * 50_000))
            )
    size = source.stat().st_size
    env = importctl_env(server, tmp_path)
    command = [IMPORTCTL, "upload", str(source), "--customer=acme", f"--url={server.url}", "--chunk-size=1048576"]
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    counted = "SELECT coalesce(max(received), 0) FROM import_uploads WHERE filename = 'big.csv'"
    try:
        until(lambda: query(server.stack.app_dsn, counted)[0][0] >= 2 * 1024 * 1024, timeout=60, interval=0.005)
    except AssertionError:
        first.kill()
        raise AssertionError(first.communicate()) from None
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, (out, err)
    stopped = query(server.stack.app_dsn, counted)[0][0]
    assert 0 < stopped < size
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = int(again.stderr.split("resuming at ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert resumed >= stopped - 1024 * 1024  # at most the request it was in is sent again
    final = server.stack.blob_root / "acme" / "uploads" / f"{again.stdout.strip()}-big.csv"
    assert sha256(final) == sha256(source)


def test_importctl_upload_refused_names_the_reason(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "theirs.csv"
    source.write_bytes(users_csv(3))
    command = [IMPORTCTL, "upload", str(source), "--customer=acme", f"--url={server.url}"]
    result = subprocess.run(
        command, env=importctl_env(server, tmp_path, "tok-globex"), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result
    assert "403" in result.stderr and "may not act for customer 'acme'" in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run(
        [IMPORTCTL, "upload", str(tmp_path / "nope.csv"), "--customer=acme", f"--url={server.url}"],
        env=importctl_env(server, tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "nope.csv is not a readable regular file" in missing.stderr


def test_creation_with_a_chunked_body_stores_its_bytes(server: Server) -> None:
    data = users_csv(50)
    headers = server.headers(
        **{
            "Upload-Length": str(len(data)),
            "Upload-Metadata": encode({"filename": "chunked.csv"}),
            "Content-Type": "application/offset+octet-stream",
        }
    )
    pieces = (data[i : i + 100] for i in range(0, len(data), 100))  # no Content-Length: chunked
    answer = requests.post(f"{server.url}/uploads", data=pieces, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Upload-Offset"] == str(len(data)) and answer.json()["finished"] is True


def test_a_creation_without_content_length_or_body_is_an_empty_start(server: Server) -> None:
    """curl -X POST sends no Content-Length at all: that is no body, not a body of the wrong type."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer tok-acme\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Length: 10\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
