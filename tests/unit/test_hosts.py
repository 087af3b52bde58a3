"""Private hosts (SPEC 16) without a network: every spelling of an address, what is public,
a connection that goes only to a checked address, and lookups bounded in time and number."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from service import hosts

NUMERIC = ["127.1", "0x7f.1", "0X7F.0.0.1", "2130706433", "0x7f000001", "017700000001", "0177.0.0.1", "1.2.3"]
NUMERIC += ["10.0xff.1", "255.255.255.255", "0", "0x0", "8.8.8.8", "0x08.0x08.0x08.0x08", "0127.0.0.1"]
NOT_NUMERIC = ["08.0.0.1", "1.2.3.4.5", "4294967296", "256.1.1.1", "1.2.3.4x", "+1.2.3.4", "1..2", "", "a.b"]


@pytest.mark.parametrize("spelling", NUMERIC)
def test_an_ipv4_spelling_is_read_as_the_c_library_reads_it(spelling: str) -> None:
    address = hosts.literal_address(spelling)
    assert address is not None and address.packed == socket.inet_aton(spelling)


@pytest.mark.parametrize("spelling", NOT_NUMERIC)
def test_what_the_c_library_does_not_read_as_an_address_is_a_name(spelling: str) -> None:
    assert hosts.literal_address(spelling) is None
    with pytest.raises(OSError):
        socket.inet_aton(spelling)


@pytest.mark.parametrize(
    "host, address",
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("127.0.0.1.", "127.0.0.1"),  # a trailing dot makes it no less an address
        ("hooks.example.com", None),
        ("localhost", None),
    ],
)
def test_a_url_host_is_an_address_or_a_name(host: str, address: str | None) -> None:
    found = hosts.literal_address(host)
    assert (str(found) if found is not None else None) == address


@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 carrying 127.0.0.1
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("2001:db8::1", "private"),
        ("198.18.0.1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "private"),
        ("240.0.0.1", "private"),
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, long deprecated
        ("64:ff9b::7f00:1", "reserved"),  # NAT64: no way to tell where it leads
    ],
)
def test_an_address_that_is_not_public_says_what_it_is(address: str, kind: str) -> None:
    assert hosts.not_public(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_a_public_unicast_address_is_fine(address: str) -> None:
    assert hosts.not_public(ipaddress.ip_address(address)) is None


# -- connecting -------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A local TCP listener that accepts and keeps every connection."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server, accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_connection_goes_to_the_address_the_name_was_checked_as(
    listener: tuple[socket.socket, list[socket.socket]],
) -> None:
    server, accepted = listener
    port = server.getsockname()[1]
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    with hosts.connect("hooks.acme.test", port, 2.0, allow_private=True, resolve=resolve) as conn:
        assert conn.getpeername() == ("127.0.0.1", port)
    assert asked == ["hooks.acme.test"]  # resolved once, by us, not again by the socket


@pytest.mark.parametrize("answers", [["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["::1"], ["10.0.0.7"]])
def test_a_name_with_any_private_address_is_never_connected_to(
    listener: tuple[socket.socket, list[socket.socket]], answers: list[str]
) -> None:
    server, accepted = listener
    with pytest.raises(hosts.HostRefused, match="resolves to a (loopback|private) address"):
        hosts.connect(
            "hooks.acme.test", server.getsockname()[1], 2.0, allow_private=False, resolve=lambda h, p: answers
        )
    time.sleep(0.2)
    assert accepted == []


def test_a_literal_private_address_is_refused_without_asking_the_resolver() -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise AssertionError("a literal address needs no lookup")

    with pytest.raises(hosts.HostRefused, match="host 2130706433 is a loopback address"):
        hosts.connect("2130706433", 80, 2.0, allow_private=False, resolve=resolve)


def test_a_name_that_resolves_to_nothing_is_not_found() -> None:
    with pytest.raises(socket.gaierror):
        hosts.checked_addresses("hooks.acme.test", 80, False, lambda h, p: [])


# -- lookups at enqueue -----------------------------------------------------------------------


def test_a_slow_resolver_holds_the_request_no_longer_than_the_bound_and_the_name_passes() -> None:
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    started = time.monotonic()
    try:
        assert hosts.enqueue_refusal("slow.acme.test", 443, False, slow, timeout=0.3) is None
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
    assert hosts.RESOLVE_TIMEOUT_SECONDS <= 2.0


def test_lookups_that_never_end_cannot_pile_up_threads() -> None:
    release = threading.Event()

    def stuck(host: str, port: int) -> list[str]:
        release.wait(10)
        return []

    try:
        for _ in range(hosts.MAX_LOOKUPS):
            assert hosts.resolve_within("stuck.acme.test", 80, stuck, 0.01) is None
        threads = threading.active_count()
        started = time.monotonic()
        assert hosts.resolve_within("fast.acme.test", 80, lambda h, p: ["127.0.0.1"], 1.0) is None
        assert time.monotonic() - started < 0.1 and threading.active_count() == threads
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if hosts.resolve_within("fast.acme.test", 80, lambda h, p: ["127.0.0.1"], 1.0) == ["127.0.0.1"]:
            return
        time.sleep(0.05)
    raise AssertionError("the lookups were not released once the resolver answered")
