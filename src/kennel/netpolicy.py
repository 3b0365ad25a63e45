"""Where Kennel may send requests on a user's behalf: URL shape and destination addresses.

Pure rules, no I/O and no DNS. `check_url` is what `PUT …/webhook` can check up front (spec
§16.14: scheme, length, literal IP hosts); whoever connects later (webhook delivery, the agent's
web fetch) resolves the name itself and passes every address it would connect to through
`is_allowed_address`, so a DNS name can't be used to reach an internal host.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

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


class UnsafeURLError(ValueError):
    """A URL Kennel refuses to send requests to; the message says why."""


def check_url(url: str, *, allow_http: bool, allowed_networks: Iterable[IPNetwork] = ()) -> None:
    """Raise `UnsafeURLError` unless `url` is an absolute http(s) URL Kennel may call.

    `https` always; `http` only with `allow_http`. A host written as an IP address (or as
    `localhost`) must be public, or inside one of `allowed_networks`. Names are not resolved.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARACTERS.search(url):
        raise UnsafeURLError("the URL contains spaces, control characters or backslashes")
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeURLError(
            "the URL must start with https://"
            if not allow_http
            else "the URL must start with https:// or http://"
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
        raise UnsafeURLError(
            f"the URL points at a private, loopback or reserved address ({addresses[0]}); "
            "allow its network in the settings to use it"
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
