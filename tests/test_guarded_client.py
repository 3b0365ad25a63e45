"""The guarded HTTP client: it connects only to public or allow-listed addresses, and only to
the address it checked, against a real server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import pytest

from kennel.netpolicy import UnsafeURLError, guarded_client
from website import LocalSite

Networks = tuple[ipaddress.IPv4Network, ...]
LOOPBACK_HOST = (ipaddress.ip_network("127.0.0.1/32"),)
METADATA_SERVICE = "http://169.254.169.254/latest/meta-data/"


async def get(
    url: str, *, allowed: tuple[Any, ...] = (), redirects: bool = False
) -> httpx.Response:
    async with guarded_client(allowed, timeout=5, follow_redirects=redirects) as client:
        return await client.get(url)


async def test_loopback_is_refused_unless_allow_listed(website: LocalSite) -> None:
    with pytest.raises(UnsafeURLError, match=r"loopback or reserved address \(127\.0\.0\.1\)"):
        await get(website.url("/notes.txt"))
    with pytest.raises(UnsafeURLError, match=r"add 127\.0\.0\.1/32 .* KENNEL_ALLOW_PRIVATE"):
        await get(website.url("/notes.txt"))
    response = await get(website.url("/notes.txt"), allowed=LOOPBACK_HOST)
    assert response.status_code == 200 and "feed the dogs" in response.text


async def test_a_name_that_resolves_to_loopback_is_refused(website: LocalSite) -> None:
    url = f"http://localhost:{website.port}/notes.txt"
    with pytest.raises(UnsafeURLError, match="localhost"):
        await get(url)
    # `localhost` is 127.0.0.1 and ::1; only the allow-listed one is used.
    response = await get(url, allowed=LOOPBACK_HOST)
    assert response.status_code == 200


async def test_a_redirect_into_a_private_network_is_refused(website: LocalSite) -> None:
    url = website.url(f"/redirect?to={METADATA_SERVICE}")
    with pytest.raises(UnsafeURLError, match=r"169\.254\.169\.254"):
        await get(url, allowed=LOOPBACK_HOST, redirects=True)


async def test_it_connects_to_the_address_it_checked(
    website: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebinding DNS server answers the check with an allowed address and the connection
    with an internal one; the guard must not ask twice."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA bytes
        if name != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(name)
        address = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    response = await get(f"http://rebind.test:{website.port}/notes.txt", allowed=LOOPBACK_HOST)
    assert response.status_code == 200
    assert lookups == ["rebind.test"]
    # TLS and virtual hosting still see the name.
    assert response.request.headers["host"] == f"rebind.test:{website.port}"


async def test_an_unresolvable_name_is_a_connect_error() -> None:
    with pytest.raises(httpx.ConnectError, match=r"nowhere\.invalid"):
        await get("http://nowhere.invalid/")
