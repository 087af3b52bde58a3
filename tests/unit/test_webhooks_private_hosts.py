"""Private hosts for webhooks (SPEC 16): a callback URL whose host is, or resolves to, a
loopback, private, link-local, multicast, unspecified or reserved address is refused in every
spelling unless the customer sets allow_private_hosts; HTTPS to a checked address keeps the
name's SNI. (A delivery that finds such a host: test_webhooks.py; the addresses: test_hosts.py.)"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service import hosts
from service.config import CustomerSettings
from service.stages import webhooks

SECRET = "s3cr3t-webhook-key"


def public(host: str, port: int) -> list[str]:
    """A resolver that answers a public address for every name (no DNS in unit tests)."""
    return ["93.184.216.34"]


def settings_for(url: str, allow_private: bool = False) -> CustomerSettings:
    """Settings whose prefix covers url, so that only the host can be the reason to refuse it."""
    return CustomerSettings((url.rsplit("/", 1)[0] + "/",), SECRET, allow_private_hosts=allow_private)


PRIVATE_SPELLINGS = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("0x7f.1", "loopback"),
    ("0x7f000001", "loopback"),
    ("2130706433", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("127.0.0.1.", "loopback"),
    ("[::1]", "loopback"),
    ("[0:0:0:0:0:0:0:1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:7f00:1]", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("[::]", "unspecified"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("[fe80::1%25eth0]", "link-local"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("255.255.255.255", "private"),
    ("[::127.0.0.1]", "reserved"),
]


@pytest.mark.parametrize("host, kind", PRIVATE_SPELLINGS)
def test_a_callback_to_a_private_address_in_any_spelling_is_refused_naming_its_kind(host: str, kind: str) -> None:
    url = f"http://{host}:8080/hooks/x"
    asked: list[str] = []

    def resolve(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["93.184.216.34"]

    problem = webhooks.refusal(url, "acme", settings_for(url), resolve)
    assert problem is not None and problem.startswith("option callback_url: host ")
    assert f"is a {kind}" in problem and "allow_private_hosts" in problem
    assert asked == []  # an address in any spelling is judged as is, never looked up


@pytest.mark.parametrize(
    "answers, kind",
    [
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["93.184.216.34", "10.1.2.3"], "private"),  # one private address among public ones is enough
        (["169.254.169.254"], "link-local"),
        (["::ffff:127.0.0.1"], "loopback"),
    ],
)
def test_a_callback_whose_name_resolves_to_a_private_address_is_refused(answers: list[str], kind: str) -> None:
    url = "https://hooks.acme.example/hooks/x"
    problem = webhooks.refusal(url, "acme", settings_for(url), lambda name, port: answers)
    assert problem is not None and f"host hooks.acme.example resolves to a {kind} address" in problem
    assert answers[-1] not in problem  # what an (internal) name resolves to is not shown


def test_localhost_is_refused_through_the_system_resolver() -> None:
    url = "http://localhost:8080/hooks/x"
    problem = webhooks.refusal(url, "acme", settings_for(url))
    assert problem is not None and "host localhost resolves to a loopback address" in problem


@pytest.mark.parametrize(
    "url", ["https://8.8.8.8/hooks/x", "https://0x08.0x08.0x08.0x08/hooks/x", "https://[2606:4700::1111]/hooks/x"]
)
def test_a_callback_to_a_public_address_is_fine(url: str) -> None:
    assert webhooks.refusal(url, "acme", settings_for(url), public) is None


@pytest.mark.parametrize("host", [host for host, _ in PRIVATE_SPELLINGS] + ["localhost"])
def test_a_customer_with_allow_private_hosts_may_use_any_host(host: str) -> None:
    url = f"http://{host}:8080/hooks/x"
    assert (
        webhooks.refusal(url, "acme", settings_for(url, allow_private=True), lambda name, port: ["127.0.0.1"]) is None
    )


def test_a_slow_resolver_holds_an_enqueue_for_at_most_the_bound_and_the_name_is_checked_at_delivery() -> None:
    release = threading.Event()

    def slow(name: str, port: int) -> list[str]:
        release.wait(30)
        return ["127.0.0.1"]

    url = "https://slow.acme.example/hooks/x"
    started = time.monotonic()
    try:
        assert webhooks.refusal(url, "acme", settings_for(url), slow) is None
    finally:
        release.set()
    assert time.monotonic() - started < hosts.RESOLVE_TIMEOUT_SECONDS + 0.5


def test_https_sends_the_names_sni_while_connecting_to_the_checked_address(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.acme.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: names.append(server_name)  # type: ignore[assignment,misc,return-value]
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()  # the client refuses the self-signed certificate

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://hooks.acme.test:{server.getsockname()[1]}/hooks/x"
    try:
        outcome = webhooks.post(url, b"{}", {}, timeout=5, allow_private=True, resolve=lambda n, p: ["127.0.0.1"])
    finally:
        server.close()
    assert names == ["hooks.acme.test"]
    assert not outcome.delivered and outcome.what.startswith("TLS error")  # the certificate is checked too
