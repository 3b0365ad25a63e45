"""Where Kennel may send requests on a user's behalf: URL shape and destination addresses.

`check_url` is what `PUT …/webhook` can check up front (spec §16.14: scheme, length, literal IP
hosts), without I/O. Whoever connects later (webhook delivery, the agent's web fetch) sends
through `guarded_client`: its transport resolves each name itself, passes every address through
`is_allowed_address` and connects to exactly the address it checked, so neither a DNS name nor a
redirect nor a rebinding DNS server can be used to reach an internal host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

# RFC 6761: `localhost` and every name under it resolve to loopback.
_LOOPBACK_NAMES = re.compile(r"^(.+\.)?localhost\.?$")
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
# Whitespace, controls and backslashes: URL parsers disagree on them, and a host that one
# parser reads differently from the HTTP client is how allow-lists get bypassed.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
# Hosts that the C resolver reads as IPv4 addresses in legacy forms (`127.1`, `0x7f000001`).
_NUMERIC_HOST = re.compile(r"^[0-9][0-9a-fx.]*$")


ALLOW_SETTING = "KENNEL_ALLOW_PRIVATE_NETWORKS"
"""The setting whose networks `allowed_networks` holds, named in refusals so they say the fix."""


class UnsafeURLError(ValueError):
    """A URL Kennel refuses to send requests to; the message says why. `kind` names the rule:
    `scheme` (not https, or http where it is not allowed), `address` (a private, loopback or
    reserved destination) or `shape` (anything else about the URL)."""

    def __init__(self, message: str, *, kind: str = "shape") -> None:
        super().__init__(message)
        self.kind = kind


def check_url(url: str, *, allow_http: bool, allowed_networks: Iterable[IPNetwork] = ()) -> None:
    """Raise `UnsafeURLError` unless `url` is an absolute http(s) URL Kennel may call.

    `https` always; `http` only with `allow_http`. A host written as an IP address (or as
    `localhost`) must be public, or inside one of `allowed_networks`. Names are not resolved.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARACTERS.search(url):
        raise UnsafeURLError("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed or malformed [IPv6] host
        raise UnsafeURLError(f"the URL is invalid: {error}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeURLError(
            "the URL must start with https://"
            if not allow_http
            else "the URL must start with https:// or http://",
            kind="scheme",
        )
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as error:
        raise UnsafeURLError(f"the URL has an invalid host or port: {error}") from None
    if not host:
        raise UnsafeURLError("the URL must be absolute, with a host")
    allowed = tuple(allowed_networks)
    addresses = literal_addresses(host)
    # `localhost` stands for two addresses; allow-listing either one is enough here, since
    # delivery checks the address it actually connects to.
    if addresses and not any(is_allowed_address(address, allowed) for address in addresses):
        raise refused_address("the URL", addresses[0])


def refused_address(subject: str, address: IPAddress) -> UnsafeURLError:
    """The refusal of an internal destination, with the setting (and value) that allows it."""
    network = ipaddress.ip_network(address)
    return UnsafeURLError(
        f"{subject} points at a private, loopback or reserved address ({address}); "
        f"to allow it, add {network} (or its network) to {ALLOW_SETTING}",
        kind="address",
    )


def literal_addresses(host: str) -> tuple[IPAddress, ...]:
    """The addresses a host stands for without any DNS lookup: an IP literal, a legacy numeric
    IPv4 form, or a `localhost` name. A DNS name gives no addresses."""
    host = host.lower().strip("[]")
    if ":" in host:
        host = host.split("%", 1)[0]  # an IPv6 zone (`fe80::1%eth0`) names no other address
    if _LOOPBACK_NAMES.match(host):
        return _LOOPBACK
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return (ipaddress.IPv4Address(socket.inet_aton(host)),)
        except OSError:
            pass
    return ()


def is_allowed_address(address: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """Whether Kennel may connect to `address`: a public one, or one that is allow-listed."""
    allowed = tuple(allowed_networks)
    if any(_contains(network, address) for network in allowed):
        return True
    return all(_is_public(candidate) for candidate in _with_embedded(address))


def _is_public(address: IPAddress) -> bool:
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def _with_embedded(address: IPAddress) -> Iterator[IPAddress]:
    """The address and the IPv4 addresses tunnelled inside an IPv6 one (mapped, 6to4)."""
    yield address
    if isinstance(address, ipaddress.IPv6Address):
        for inner in (address.ipv4_mapped, address.sixtofour):
            if inner is not None:
                yield inner


def _contains(network: IPNetwork, address: IPAddress) -> bool:
    if network.version != address.version:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return mapped is not None and mapped in network
    return address in network


def guarded_client(
    allowed_networks: Iterable[IPNetwork] = (),
    *,
    timeout: httpx.Timeout | float,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = False,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` that connects only to public or allow-listed addresses.

    A refused destination raises `UnsafeURLError` from the request call (it is not an
    `httpx.HTTPError`). Redirects, when followed, go through the same check. Proxy variables
    and `.netrc` are ignored: a proxy would make the checked address the proxy's.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allowed_networks),
        timeout=timeout,
        headers=headers,
        follow_redirects=follow_redirects,
        trust_env=False,
    )


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport on a `GuardedNetworkBackend`; TLS SNI and `Host` keep the name."""

    def __init__(self, allowed_networks: Iterable[IPNetwork] = ()) -> None:
        ssl_context = _ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx 0.28 has no parameter for the network backend (encode/httpx#3749), so the pool
        # it built is replaced by the same pool on ours: `handle_async_request` only calls
        # `self._pool`, and what it sends and maps stays httpx's own code.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,  # httpx's default limits
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedNetworkBackend(allowed_networks),
        )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs a tenth of a second: once per process, for every client."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves a host once and connects only to the addresses `is_allowed_address` accepts."""

    def __init__(self, allowed_networks: Iterable[IPNetwork] = ()) -> None:
        self._allowed = tuple(allowed_networks)
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with anyio.fail_after(timeout):
                addresses = await _resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        allowed = [address for address in addresses if is_allowed_address(address, self._allowed)]
        if not allowed:
            raise refused_address(host, addresses[0])
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in allowed:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                # An address, not the name: a second lookup could answer differently.
                return await self._backend.connect_tcp(
                    str(address), port, remaining, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("Unix sockets are not a destination Kennel connects to")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, in the resolver's order, without duplicates."""
    literal = literal_addresses(host)
    if literal:
        return list(literal)
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no address")
    return list(dict.fromkeys(addresses))
