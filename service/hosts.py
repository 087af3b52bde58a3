"""Private hosts (SPEC 16): which addresses a customer's URL may reach, in every spelling, and a
connection that goes only to an address that was checked.

A host is checked by what it is or resolves to, never by its text: the literal forms the C
resolver accepts (127.1, 2130706433, 0x7f.1, 017700000001, [::ffff:127.0.0.1]) are read here
as it reads them, and a name is resolved once and every address it gives is checked. The
connection then goes to one of those checked addresses, so a name that resolves elsewhere a
moment later (DNS rebinding) is never connected to. Webhooks and `https://` sources share it
all: the shape a customer's URL may have, the prefixes that allow it, and the pinned
connection (http.client's own connect would resolve the name again).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from service.errors import ImportServiceError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as text ("93.184.216.34", "2606:2800::1").
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 2048  # a callback URL's; a source's may be longer (signed URLs)
RESOLVE_TIMEOUT_SECONDS = 2.0  # the longest a request waits for a name to resolve at enqueue
MAX_LOOKUPS = 8  # lookups waited on at once per process; a stuck resolver cannot pile up threads
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")  # hex, octal, decimal (ASCII only)


class HostRefused(ImportServiceError):
    """A host is, or resolves to, an address the customer may not reach; the message says which kind."""


def url_problem(url: str, max_length: int = MAX_URL_LENGTH) -> str | None:
    """Why `url` can never be a customer's URL (scheme, credentials, shape), or None when it can.
    The reason never repeats the URL: it may hold a password or a signature."""
    if len(url) > max_length:
        return f"must be at most {max_length} characters"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "must not contain spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@)"
    try:
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if not parts.hostname:
        return "must name a host"
    # /imports/../admin starts with the prefix /imports/ but is not under it on the server.
    if any(segment in (".", "..") for segment in unquote(parts.path).replace("\\", "/").split("/")):
        return "must not contain . or .. path segments"
    return None


def under_prefixes(url: str, prefixes: Sequence[str]) -> bool:
    """Whether url starts with one of the prefixes (scheme and host in any case); a prefix
    without a path covers that host only (http://a.example does not cover
    http://a.example.evil.net/ or another port)."""
    url = _lower_origin(url)
    for prefix in map(_lower_origin, prefixes):
        if not url.startswith(prefix):
            continue
        rest = url[len(prefix) :]
        if urlsplit(prefix).path or not rest or rest[0] in "/?#":
            return True
    return False


def _lower_origin(url: str) -> str:
    """url with its scheme://host[:port] in lower case (they are case-insensitive; the path is not)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    return f"{scheme.lower()}://{rest[:cut].lower()}{rest[cut:]}"


def default_port(scheme: str) -> int:
    """The port of a URL that names none: 443 for https, 80 for http."""
    return 443 if scheme.lower() == "https" else 80


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: what an error may name (no path, query or credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def shown_url(url: str) -> str:
    """The URL as a log line, an error or a job view may show it: no user:password, no query
    string (signed URLs carry their signature there), no fragment."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return url
    return origin(url) + parts.path + ("?..." if parts.query else "")


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


def pinned_connection(
    scheme: str,
    host: str,
    port: int,
    timeout: float,
    allow_private: bool,
    resolve: Resolver = system_resolve,
    read_timeout: float | None = None,
) -> http.client.HTTPConnection:
    """An http.client connection (HTTPS with the certificate checked against `host`, and its SNI)
    whose connect goes only to an address `connect` checked: within `timeout`, then each read
    within `read_timeout` (default: `timeout`). Refusals raise HostRefused when it connects."""
    conn: http.client.HTTPConnection
    if scheme.lower() == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def pinned(address: Any, timeout_: Any = None, source_address: Any = None) -> socket.socket:
        # http.client would resolve the name again here and connect to whatever it says now.
        sock = connect(host, port, timeout, allow_private, resolve)
        sock.settimeout(timeout if read_timeout is None else read_timeout)
        return sock

    conn._create_connection = pinned  # type: ignore[attr-defined]
    return conn


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
