"""Private hosts (SPEC 16): which addresses a customer's URL may reach, in every spelling, and a
connection that goes only to an address that was checked.

A host is checked by what it is or resolves to, never by its text: the literal forms the C
resolver accepts (127.1, 2130706433, 0x7f.1, 017700000001, [::ffff:127.0.0.1]) are read here
as it reads them, and a name is resolved once and every address it gives is checked. The
connection then goes to one of those checked addresses, so a name that resolves elsewhere a
moment later (DNS rebinding) is never connected to. Webhooks use it; so can any source that
fetches a customer's URL.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import unquote

from service.errors import ImportServiceError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as text ("93.184.216.34", "2606:2800::1").
Resolver = Callable[[str, int], Sequence[str]]

RESOLVE_TIMEOUT_SECONDS = 2.0  # the longest a request waits for a name to resolve at enqueue
MAX_LOOKUPS = 8  # lookups waited on at once per process; a stuck resolver cannot pile up threads
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")  # hex, octal, decimal (ASCII only)


class HostRefused(ImportServiceError):
    """A host is, or resolves to, an address the customer may not reach; the message says which kind."""


def literal_address(host: str) -> Address | None:
    """The address `host` spells as a literal (any form inet_aton or an IPv6 parser accepts),
    or None when it is a name. `host` is a URL's host: brackets optional, %25 zone allowed."""
    text = unquote(host.strip("[]"))
    if len(text) > 253:
        return None  # longer than any name, let alone an address (and no huge int() below)
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _inet_aton(text[:-1] if text.endswith(".") else text)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 as the C library's inet_aton reads it: 1 to 4 parts, each decimal, 0-octal or
    0x-hex, the last filling the remaining bytes (127.1 is 127.0.0.1, 2130706433 too)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(part) for part in parts):
        return None
    numbers: list[int] = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif part.startswith("0"):
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, n in enumerate(leading):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def not_public(address: Address) -> str | None:
    """Why a connection to `address` is refused (loopback, private, link-local...), or None when
    it is a public unicast address. IPv4 carried in IPv6 (mapped, 6to4, Teredo) is judged too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local"
        for carried in (address.ipv4_mapped, address.sixtofour, *(address.teredo or ())):
            if carried is not None and (kind := not_public(carried)) is not None:
                return kind
        if address.ipv4_mapped is not None:
            return None  # ::ffff:a.b.c.d is that IPv4 address, just found public
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "shared (carrier-grade NAT)"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "non-public"),
    )
    return next((kind for refused, kind in checks if refused), None)


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for host (what a plain connect would use)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def checked_addresses(host: str, port: int, allow_private: bool, resolve: Resolver = system_resolve) -> list[Address]:
    """Resolve `host` once and return its addresses, all checked; raise HostRefused when any of
    them is not public (unless allow_private), socket.gaierror when it resolves to nothing."""
    literal = literal_address(host)
    found = [literal] if literal is not None else [a for a in map(_address, resolve(host, port)) if a is not None]
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, "the name resolves to no address")
    if not allow_private:
        for address in found:
            kind = not_public(address)
            if kind is not None:
                raise HostRefused(_refused(host, literal is not None, kind))
    return found


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _refused(host: str, literal: bool, kind: str) -> str:
    # The address a name resolves to is not shown: for an internal name it is the operator's.
    what = f"is a {kind} address" if literal else f"resolves to a {kind} address"
    return f"host {host[:255]} {what}; only public addresses may be reached"


def connect(
    host: str, port: int, timeout: float, allow_private: bool, resolve: Resolver = system_resolve
) -> socket.socket:
    """A TCP connection to host:port that goes only to an address checked by checked_addresses:
    the name is resolved once, here, so it cannot resolve elsewhere between check and connect.
    The addresses are tried in turn, as socket.create_connection does, all within `timeout`."""
    deadline = time.monotonic() + timeout
    error: OSError = TimeoutError("timed out")
    for address in checked_addresses(host, port, allow_private, resolve):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return socket.create_connection((str(address), port), left)
        except OSError as exc:
            error = exc
    raise error


def enqueue_refusal(
    host: str,
    port: int,
    allow_private: bool,
    resolve: Resolver = system_resolve,
    timeout: float = RESOLVE_TIMEOUT_SECONDS,
) -> str | None:
    """Why host may not be used, judged at enqueue within `timeout`, or None. A name that does
    not resolve in time (or at all) is let through: every connection checks it again."""
    if allow_private:
        return None
    literal = literal_address(host)
    if literal is not None:
        kind = not_public(literal)
        return None if kind is None else _refused(host, True, kind)
    for text in resolve_within(host, port, resolve, timeout) or ():
        try:
            kind = not_public(ipaddress.ip_address(text))
        except ValueError:
            continue  # not an address: the connection will not use it either
        if kind is not None:
            return _refused(host, False, kind)
    return None


def resolve_within(host: str, port: int, resolve: Resolver, timeout: float) -> list[str] | None:
    """What resolve gives for host within `timeout`, [] when it fails, None when it does not
    answer in time or MAX_LOOKUPS lookups are already waiting (the lookup goes on alone)."""
    if not _lookups.acquire(blocking=False):
        return None
    answer: list[str] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.extend(resolve(host, port))
        except (OSError, UnicodeError, ValueError):
            pass  # not found, or a host the resolver cannot encode
        finally:
            _lookups.release()
            done.set()

    threading.Thread(target=lookup, name="resolve", daemon=True).start()
    return list(answer) if done.wait(timeout) else None
