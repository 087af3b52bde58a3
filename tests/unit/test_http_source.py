"""https:// and http:// sources (SPEC 18, 16) against local HTTP servers on 127.0.0.1: the
confinement to url_prefixes, credentials and private hosts refused, redirects not followed,
ranged reads pinned with If-Match/If-Range, and the forward-only reader of a server without
ranges. FileServer is shared with tests/e2e/test_https.py."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service import hosts
from service.config import Config, CustomerSettings, load_customers
from service.errors import BlobRefused, BlobUnavailable, ConfigError, FileRejected, LimitExceeded
from service.sources import blob
from service.sources import http as http_source
from service.sources.http import HttpObject
from service.sources.ranged import CHANGED, HEAD_BYTES, READ_BYTES

SIG = "sig=SeCrEt-SiGnAtUrE"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)\Z")


class FileServer:
    """A threaded HTTP server of files (path -> bytes) on 127.0.0.1, recording every request.

    ranges: honours Range (and If-Range) and says Accept-Ranges; etag: sends a strong ETag (the
    body's hash), or a weak one ("weak"); if_match: answers 412 when If-Match names another
    ETag; head: answers HEAD (else 405); status/redirect: answers every request so; short:
    sends half the body it announced; stall: seconds to wait before the body."""

    def __init__(
        self,
        *,
        ranges: bool = True,
        etag: bool | str = True,
        if_match: bool = True,
        head: bool = True,
        tls: ssl.SSLContext | None = None,
    ):
        self.ranges, self.etag, self.if_match, self.head = ranges, etag, if_match, head
        self.status: int | None = None
        self.redirect: str | None = None
        self.short = False
        self.stall = 0.0
        self.max_range: int | None = None  # sends at most this many bytes of a range
        self.files: dict[str, tuple[bytes, int]] = {}  # path -> (body, version)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path with query, headers)
        self.lock = threading.Lock()
        self._version = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def put(self, path: str, body: bytes) -> str:
        """Serve body at path (a new version: new ETag, new Last-Modified); its URL."""
        with self.lock:
            self._version += 1
            self.files[path] = (body, self._version)
        return self.base + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def seen(self, path: str) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return [(method, headers) for method, target, headers in self.requests if target.split("?")[0] == path]

    def tag(self, body: bytes) -> str:
        strong = f'"{hashlib.sha1(body).hexdigest()[:16]}"'
        return f"W/{strong}" if self.etag == "weak" else strong

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                with server.lock:
                    server.requests.append((self.command, self.path, dict(self.headers.items())))
                    found = server.files.get(self.path.split("?")[0])
                if server.status is not None or (head and not server.head):
                    return self._send(server.status or 405, b"", {})
                if server.redirect is not None:
                    return self._send(302, b"", {"Location": server.redirect})
                if found is None:
                    return self._send(404, b"", {})
                body, version = found
                etag = server.tag(body)
                headers = {"Last-Modified": formatdate(1_700_000_000 + version, usegmt=True)}
                if server.etag:
                    headers["ETag"] = etag
                if server.ranges:
                    headers["Accept-Ranges"] = "bytes"
                wanted = self.headers.get("If-Match")
                if server.if_match and wanted is not None and wanted != etag:
                    return self._send(412, b"", headers)
                asked = _RANGE.match(self.headers.get("Range") or "") if server.ranges else None
                if asked and self.headers.get("If-Range", etag) == etag:
                    start = int(asked.group(1))
                    if start >= len(body):
                        return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(body)}"})
                    end = min(int(asked.group(2) or len(body) - 1), len(body) - 1)
                    end = end if server.max_range is None else min(end, start + server.max_range - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                    return self._send(206, b"" if head else body[start : end + 1], headers, end + 1 - start)
                self._send(200, b"" if head else body, headers, len(body))

            def _send(self, status: int, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if server.stall:
                    time.sleep(server.stall)
                self.wfile.write(body[: len(body) // 2] if server.short else body)

        return Handler


@pytest.fixture
def ranged() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def plain() -> Iterator[FileServer]:
    """A server without ranges or ETags (like python -m http.server): Last-Modified only."""
    server = FileServer(ranges=False, etag=False)
    yield server
    server.close()


def config(*prefixes: str, allow_private: bool = True) -> Config:
    settings = CustomerSettings(url_prefixes=prefixes, allow_private_hosts=allow_private)
    return Config(customers={"acme": "dbname=acme", "globex": "dbname=globex"}, customer_settings={"acme": settings})


def body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def locate(server: FileServer, url: str, allow_private: bool = True) -> HttpObject:
    found = blob.locate(url, "acme", config(f"{server.base}/files/", allow_private=allow_private))
    assert isinstance(found, HttpObject)
    return found


# -- config: url_prefixes, checked like webhook_prefixes -------------------------------------------


@pytest.mark.parametrize(
    "prefixes", [["ftp://files.example.com/"], ["https://u:p@files.example.com/"], "https://x/", [3], ["https://x/?q"]]
)
def test_url_prefixes_of_the_wrong_shape_stop_the_config_naming_the_key(tmp_path: Path, prefixes: Any) -> None:
    path = tmp_path / "customer_map.json"
    path.write_text(json.dumps({"acme": {"dsn": "dbname=acme", "url_prefixes": prefixes}}))
    with pytest.raises(ConfigError, match=r"customer 'acme': url_prefixes must be a list of http\(s\)://host"):
        load_customers(path)


def test_url_prefixes_are_read_into_the_customers_settings(tmp_path: Path) -> None:
    path = tmp_path / "customer_map.json"
    prefixes = ["https://files.example.com/acme/", "http://10.0.0.5:8080"]
    path.write_text(json.dumps({"acme": {"dsn": "dbname=acme", "url_prefixes": prefixes}}))
    assert load_customers(path)[1]["acme"].url_prefixes == tuple(prefixes)


# -- parse: confinement, credentials, private hosts ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example.com/acme/users.csv",
        "HTTPS://Files.Example.COM/acme/users.csv",
        "https://files.example.com/acme/deep/er/users.csv?" + SIG,
        "http://plain.example.com:8080/acme/users.csv",
    ],
)
def test_a_url_under_one_of_the_customers_prefixes_is_located(url: str) -> None:
    prefixes = ("https://files.example.com/acme/", "http://plain.example.com:8080/acme/")
    found = blob.locate(url, "acme", config(*prefixes, allow_private=False))
    assert isinstance(found, HttpObject) and found.url == url
    assert found.name == "users.csv" and found.suffix == ".csv"
    assert SIG not in repr(found) and SIG not in found.shown


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://files.example.com/globex/users.csv", "url_prefixes of customer 'acme'"),
        ("https://files.example.com.evil.net/acme/users.csv", "url_prefixes"),
        ("https://files.example.com:8443/acme/users.csv", "url_prefixes"),
        ("http://files.example.com/acme/users.csv", "url_prefixes"),  # the prefix is https
        ("https://files.example.com/acme/../globex/users.csv", ". or .."),
        ("https://files.example.com/acme/%2e%2e/globex/users.csv", ". or .."),
        ("https://files.example.com/acme/users.csv#part", "#fragment"),
        ("https://files.example.com/acme/a b.csv", "spaces"),
        ("https://files.example.com/acme/\x00.csv", "control characters"),
        ("https:///acme/users.csv", "must name a host"),
        ("https://files.example.com:99999/acme/users.csv", "port"),
        ("https://files.example.com/acme/" + "a" * 5000, "4096 characters"),
    ],
)
def test_a_url_outside_the_prefixes_or_of_a_bad_shape_is_refused_naming_the_rule(url: str, says: str) -> None:
    with pytest.raises(BlobRefused, match=re.escape(says)):
        blob.locate(url, "acme", config("https://files.example.com/acme/", allow_private=False))


def test_a_customer_without_url_prefixes_cannot_use_https() -> None:
    with pytest.raises(BlobRefused, match="customer 'globex': it has no url_prefixes configured"):
        blob.locate("https://files.example.com/acme/users.csv", "globex", config("https://files.example.com/"))


@pytest.mark.parametrize("userinfo", ["user:Pa55word@", "user@", ":Pa55word@"])
def test_credentials_in_the_url_are_refused_and_never_repeated(userinfo: str) -> None:
    url = f"https://{userinfo}files.example.com/acme/users.csv"
    with pytest.raises(BlobRefused, match=r"credentials \(user:password@\)") as refused:
        blob.locate(url, "acme", config("https://files.example.com/acme/"))
    assert "Pa55word" not in str(refused.value) and "user@" not in str(refused.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "[::1]", "10.1.2.3", "[::ffff:192.168.0.1]"])
def test_a_private_address_in_the_url_is_refused_unless_the_customer_allows_private_hosts(host: str) -> None:
    url = f"https://{host}/acme/users.csv"
    with pytest.raises(BlobRefused, match="only public addresses may be reached.*allow_private_hosts"):
        blob.locate(url, "acme", config(f"https://{host}/acme/", allow_private=False))
    assert isinstance(blob.locate(url, "acme", config(f"https://{host}/acme/", allow_private=True)), HttpObject)


def test_a_name_that_resolves_to_a_private_address_is_never_connected_to(ranged: FileServer) -> None:
    ranged.put("/files/users.csv", b"a,b\n")
    url = ranged.base.replace("127.0.0.1", "localhost") + "/files/users.csv"
    found = blob.locate(url, "acme", config(ranged.base.replace("127.0.0.1", "localhost"), allow_private=False))
    with pytest.raises(BlobRefused, match="host localhost resolves to a loopback address"):
        blob.check(found, 1 << 30)
    assert ranged.requests == []


def test_the_list_of_supported_schemes_names_https() -> None:
    with pytest.raises(BlobRefused, match="https://"):
        blob.locate("ftp://files.example.com/acme/users.csv", "acme", config("https://files.example.com/"))


def test_shown_urls_have_no_query_and_no_credentials() -> None:
    assert hosts.shown_url(f"https://a:b@Files.Example.com:8443/x/y.csv?{SIG}#f") == (
        "https://files.example.com:8443/x/y.csv?..."
    )
    assert hosts.shown_url("https://[::1]/x.csv") == "https://[::1]/x.csv"
    assert hosts.origin(f"http://files.example.com/x.csv?{SIG}") == "http://files.example.com"


# -- a server with ranges and an ETag ------------------------------------------------------------


def test_a_ranged_server_is_read_by_ranged_gets_pinned_with_if_match_and_if_range(ranged: FileServer) -> None:
    data = body(3 * 1024 * 1024 + 17)
    found = locate(ranged, ranged.put("/files/big.csv", data) + "?" + SIG)
    checked, size, version = blob.check(found, 1 << 30)
    etag = ranged.tag(data)
    assert size == len(data) and version == {"etag": etag, "ranges": True}
    assert not blob.streamed(checked)
    with blob.open_blob(checked, 1 << 30) as reader:
        assert reader.seekable()
        assert b"".join(iter(lambda: reader.read(READ_BYTES), b"")) == data
        reader.seek(len(data) - 10)
        assert reader.read() == data[-10:]
    gets = [headers for method, headers in ranged.seen("/files/big.csv") if method == "GET"]
    assert len(gets) >= 4
    for headers in gets:
        assert headers["If-Match"] == etag and headers["If-Range"] == etag
        asked = _RANGE.match(headers["Range"])
        assert asked is not None and int(asked.group(2)) - int(asked.group(1)) < READ_BYTES


def test_a_plan_pins_a_ranged_file_without_a_request(ranged: FileServer) -> None:
    data = body(5000)
    found = locate(ranged, ranged.put("/files/u.csv", data))
    pinned = blob.pin(found, {"size": len(data), "etag": ranged.tag(data), "ranges": True, "format": {}})
    assert isinstance(pinned, HttpObject) and pinned.ranged and not blob.streamed(pinned)
    assert ranged.requests == []
    with blob.open_blob(pinned, None) as reader:
        reader.seek(4000)
        assert reader.read(100) == data[4000:4100]
    assert [method for method, _ in ranged.seen("/files/u.csv")] == ["GET"]


def test_a_file_replaced_between_reads_fails_saying_it_changed(ranged: FileServer) -> None:
    data = body(3 * 1024 * 1024)
    found = locate(ranged, ranged.put("/files/u.csv", data))
    checked, _, _ = blob.check(found, 1 << 30)
    with blob.open_blob(checked, None) as reader:
        reader.read(HEAD_BYTES)
        ranged.put("/files/u.csv", data.replace(b"\x05", b"\x06"))
        with pytest.raises(FileRejected, match=re.escape(CHANGED)):
            reader.read()
    last = ranged.seen("/files/u.csv")[-1][1]
    assert last["If-Match"] == ranged.tag(data) != ranged.tag(ranged.files["/files/u.csv"][0])


def test_a_server_ignoring_if_match_but_honouring_if_range_sends_the_new_file_which_fails_the_read() -> None:
    server = FileServer(if_match=False)
    try:
        data = body(200_000)
        checked, _, _ = blob.check(locate(server, server.put("/files/u.csv", data)), 1 << 30)
        server.put("/files/u.csv", body(200_001))
        with pytest.raises(FileRejected, match=re.escape(CHANGED)), blob.open_blob(checked, None) as reader:
            reader.read()
    finally:
        server.close()


def test_a_ranged_file_that_shrank_fails_saying_it_changed(ranged: FileServer) -> None:
    found = locate(ranged, ranged.put("/files/u.csv", body(100_000)))
    pinned = blob.pin(found, {"size": 200_000, "etag": ranged.tag(body(100_000)), "ranges": True})
    assert pinned is not None
    with pytest.raises(FileRejected, match=re.escape(CHANGED)), blob.open_blob(pinned, None) as reader:
        reader.read()


def test_a_server_that_sends_less_than_a_range_asked_for_is_asked_for_the_rest(ranged: FileServer) -> None:
    data = body(300_000)
    checked, _, _ = blob.check(locate(ranged, ranged.put("/files/u.csv", data)), 1 << 30)
    ranged.max_range = 10_000
    with blob.open_blob(checked, None) as reader:
        reader.seek(1000)
        assert reader.read(200_000) == data[1000:201_000]


def test_a_connection_closed_in_the_middle_of_a_range_is_unavailable_not_a_changed_file(ranged: FileServer) -> None:
    checked, _, _ = blob.check(locate(ranged, ranged.put("/files/u.csv", body(100_000))), 1 << 30)
    ranged.short = True
    with pytest.raises(BlobUnavailable, match=r"cannot be reached \(it closed mid-answer\)"):
        with blob.open_blob(checked, None) as reader:
            reader.read(50_000)


def test_a_server_that_refuses_head_is_asked_for_its_first_byte() -> None:
    server = FileServer(head=False)
    try:
        data = body(70_000)
        checked, size, version = blob.check(locate(server, server.put("/files/u.csv", data)), 1 << 30)
        assert size == len(data) and version == {"etag": server.tag(data), "ranges": True}
        assert [(m, h.get("Range")) for m, h in server.seen("/files/u.csv")] == [("HEAD", None), ("GET", "bytes=0-0")]
        with blob.open_blob(checked, None) as reader:
            assert reader.read() == data
    finally:
        server.close()


def test_a_weak_etag_cannot_pin_ranges_so_the_file_is_streamed() -> None:
    server = FileServer(etag="weak")
    try:
        data = body(10_000)
        checked, _, version = blob.check(locate(server, server.put("/files/u.csv", data)), 1 << 30)
        assert version == {"etag": server.tag(data)} and blob.streamed(checked)
        with blob.open_blob(checked, None) as reader:
            assert reader.read() == data
    finally:
        server.close()


# -- a server without ranges: one forward-only GET ------------------------------------------------


def test_a_server_without_ranges_is_read_front_to_back_by_one_get(plain: FileServer) -> None:
    data = body(2 * 1024 * 1024 + 3)
    checked, size, version = blob.check(locate(plain, plain.put("/files/u.csv", data)), 1 << 30)
    assert size == len(data) and set(version) == {"last_modified"}
    assert blob.streamed(checked)
    with blob.open_blob(checked, 1 << 30) as reader:
        assert reader.readable() and not reader.seekable()
        assert reader.read(10) == data[:10]
        assert reader.read() == data[10:]
        assert reader.read(10) == b""
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(0)
    assert [method for method, _ in plain.seen("/files/u.csv")] == ["HEAD", "GET"]
    assert all("Range" not in headers for _, headers in plain.seen("/files/u.csv"))


def test_a_streamed_file_is_pinned_by_the_plan_and_a_new_version_fails_the_read(plain: FileServer) -> None:
    url = plain.put("/files/u.csv", body(1000))
    _, _, version = blob.check(locate(plain, url), 1 << 30)
    plain.put("/files/u.csv", body(1000))  # same size, new Last-Modified
    pinned = blob.pin(locate(plain, url), {"size": 1000, **version})
    assert pinned is not None and blob.streamed(pinned)
    with pytest.raises(FileRejected, match=re.escape(CHANGED)):
        blob.open_blob(pinned, None)


def test_a_streamed_file_over_max_file_bytes_is_refused(plain: FileServer) -> None:
    found = locate(plain, plain.put("/files/u.csv", body(5000)))
    with pytest.raises(BlobRefused, match="max_file_bytes"):
        blob.check(found, 4000)
    _, _, version = blob.check(found, 1 << 30)
    pinned = blob.pin(found, {"size": 0, **version})  # as if the check had had no Content-Length
    assert pinned is not None
    with pytest.raises(LimitExceeded, match="max_file_bytes"), blob.open_blob(pinned, 4000) as reader:
        reader.read()


def test_a_streamed_reader_counts_bytes_against_max_file_bytes_when_the_length_is_unknown() -> None:
    reader = http_source.StreamReader(HttpObject("http://x/"), _Closed(), _Chunks(6000), 4096)  # type: ignore[arg-type]
    with pytest.raises(LimitExceeded, match=r"at least .* max_file_bytes limit \(4,096 bytes\)"):
        io.BufferedReader(reader).read()


def test_a_body_shorter_than_its_content_length_fails_saying_the_file_changed(plain: FileServer) -> None:
    checked, _, _ = blob.check(locate(plain, plain.put("/files/u.csv", body(10_000))), 1 << 30)
    plain.short = True
    with pytest.raises(FileRejected, match=re.escape(CHANGED)), blob.open_blob(checked, None) as reader:
        reader.read()


def test_whole_copies_a_streamed_file_into_a_seekable_temp_file(plain: FileServer) -> None:
    data = body(300_000)
    checked, _, _ = blob.check(locate(plain, plain.put("/files/u.xlsx", data)), 1 << 30)
    with blob.open_blob(checked, None, whole=True) as copy:
        assert copy.seekable()
        copy.seek(1000)
        assert copy.read(5) == data[1000:1005]


# -- https ---------------------------------------------------------------------------------------


def tls_context(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate's file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, folder / "cert.pem"


def test_an_https_server_with_a_trusted_certificate_is_read_by_ranged_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert = tls_context(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client's default context trusts it
    server = FileServer(tls=context)
    try:
        data = body(200_000)
        checked, size, _ = blob.check(locate(server, server.put("/files/u.csv", data)), 1 << 30)
        assert server.base.startswith("https://") and size == len(data) and not blob.streamed(checked)
        with blob.open_blob(checked, None) as reader:
            assert reader.read(len(data)) == data
    finally:
        server.close()


def test_an_https_server_whose_certificate_is_not_trusted_is_refused_naming_it(tmp_path: Path) -> None:
    server = FileServer(tls=tls_context(tmp_path)[0])
    try:
        found = locate(server, server.put("/files/u.csv", b"a\n") + "?" + SIG)
        with pytest.raises(BlobRefused, match=rf"the TLS certificate of {server.base} is not trusted \(") as e:
            blob.check(found, 1 << 30)
        assert SIG not in str(e.value)
    finally:
        server.close()


# -- answers that are not the file ----------------------------------------------------------------


def test_a_redirect_is_not_followed_and_named(ranged: FileServer, plain: FileServer) -> None:
    plain.put("/files/u.csv", b"a,b\n")
    ranged.redirect = plain.base + "/files/u.csv"
    with pytest.raises(BlobRefused, match=r"/files/u.csv\?\.\.\. answered HTTP 302: redirect not followed") as refused:
        blob.check(locate(ranged, f"{ranged.base}/files/u.csv?{SIG}"), 1 << 30)
    assert SIG not in str(refused.value)
    assert plain.requests == []


def test_a_missing_file_is_refused_naming_it_without_its_query(ranged: FileServer) -> None:
    with pytest.raises(
        BlobRefused, match=r"no file at http://127\.0\.0\.1:\d+/files/gone\.csv\?\.\.\. \(HTTP 404\)"
    ) as e:
        blob.check(locate(ranged, f"{ranged.base}/files/gone.csv?{SIG}"), 1 << 30)
    assert SIG not in str(e.value)


def test_a_failing_server_is_unavailable_naming_the_server_only(ranged: FileServer) -> None:
    ranged.status = 503
    with pytest.raises(BlobUnavailable) as unavailable:
        blob.check(locate(ranged, f"{ranged.base}/files/u.csv?{SIG}"), 1 << 30)
    assert str(unavailable.value) == f"the server {ranged.base} failed (HTTP 503)"


def test_an_unreachable_server_is_unavailable_naming_the_server_only() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    found = blob.locate(f"{base}/files/u.csv?{SIG}", "acme", config(f"{base}/files/"))
    with pytest.raises(BlobUnavailable) as unavailable:
        blob.check(found, 1 << 30)
    assert str(unavailable.value) == f"the server {base} cannot be reached (connection refused)"


def test_a_server_that_stalls_times_out(ranged: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_source, "READ_TIMEOUT_SECONDS", 0.3)
    checked, _, _ = blob.check(locate(ranged, ranged.put("/files/u.csv", body(1000))), 1 << 30)
    ranged.stall = 1.0
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match=r"cannot be reached \(timed out\)"), blob.open_blob(checked, None) as r:
        r.read()
    assert time.monotonic() - started < 1.0


def test_upload_is_not_for_https(tmp_path: Path) -> None:
    source = tmp_path / "u.csv"
    source.write_text("a\n")
    cfg = config("https://files.example.com/").with_(blob_root=tmp_path / "blobs")
    assert blob.upload(source, "acme", cfg).startswith("file://")


class _Closed:
    def close(self) -> None:
        pass


class _Chunks:
    """An answer's body of `size` bytes without a Content-Length."""

    def __init__(self, size: int) -> None:
        self.left = size

    def getheader(self, name: str) -> None:
        return None

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self.left, 1000)
        view[:n] = b"x" * n
        self.left -= n
        return n
