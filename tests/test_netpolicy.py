"""The network policy: which URLs and addresses Kennel may call (spec §16.14)."""

from __future__ import annotations

import ipaddress

import pytest

from kennel.config import Settings
from kennel.netpolicy import (
    MAX_URL_LENGTH,
    UnsafeURLError,
    check_url,
    is_allowed_address,
    literal_addresses,
)

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/kennel",
        "https://hooks.example.com:8443/a/b?c=d#e",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
        "https://user:secret@example.com/hook",
        "https://xn--bcher-kva.example/hook",
    ],
)
def test_public_https_urls_pass(url: str) -> None:
    check_url(url, allow_http=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "https://"),
        ("ftp://example.com/hook", "https://"),
        ("example.com/hook", "https://"),
        ("/relative/path", "https://"),
        ("https:///no-host", "host"),
        ("https://example.com:99999/", "port"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com\\@127.0.0.1/", "backslashes"),
        ("https://example.com/\x00", "control"),
        ("https://[::1/hook", "invalid"),
        ("https://[not-an-address]/hook", "invalid"),
    ],
)
def test_malformed_or_plain_http_urls_fail(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError, match=reason):
        check_url(url, allow_http=False)


def test_http_is_allowed_only_by_the_setting() -> None:
    check_url("http://example.com/hook", allow_http=True)
    with pytest.raises(UnsafeURLError, match="https:// or http://"):
        check_url("ftp://example.com/hook", allow_http=True)


def test_length_limit() -> None:
    base = "https://example.com/"
    check_url(base + "a" * (MAX_URL_LENGTH - len(base)), allow_http=False)
    with pytest.raises(UnsafeURLError, match="longer than 2048"):
        check_url(base + "a" * (MAX_URL_LENGTH - len(base) + 1), allow_http=False)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",  # loopback
        "10.1.2.3",  # private
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # link-local: cloud metadata
        "0.0.0.0",  # unspecified
        "224.0.1.1",  # multicast (and otherwise "global")
        "240.0.0.1",  # reserved
        "100.64.0.1",  # shared address space (carrier NAT)
        "[::1]",
        "[fe80::1]",
        "[fe80::1%25eth0]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[2002:7f00:1::]",  # 6to4 wrapping 127.0.0.1
        "localhost",
        "LOCALHOST.",
        "api.localhost",
        "127.1",  # legacy numeric forms the C resolver accepts
        "2130706433",
        "0x7f000001",
    ],
)
def test_internal_literal_hosts_are_refused(host: str) -> None:
    with pytest.raises(UnsafeURLError, match="private, loopback or reserved"):
        check_url(f"https://{host}/hook", allow_http=False)


def test_allow_listed_networks_open_internal_hosts() -> None:
    check_url("http://127.0.0.1:8080/hook", allow_http=True, allowed_networks=LOOPBACK_ONLY)
    check_url("https://localhost/hook", allow_http=False, allowed_networks=LOOPBACK_ONLY)
    check_url("https://[::ffff:127.0.0.1]/", allow_http=False, allowed_networks=LOOPBACK_ONLY)
    with pytest.raises(UnsafeURLError):
        check_url("https://10.0.0.1/hook", allow_http=False, allowed_networks=LOOPBACK_ONLY)


def test_dns_names_are_not_resolved() -> None:
    # `internal.corp` may well resolve to a private address: delivery checks that, not PUT.
    check_url("https://internal.corp/hook", allow_http=False)
    assert literal_addresses("internal.corp") == ()
    assert literal_addresses("1password.com") == ()


def test_is_allowed_address() -> None:
    public = ipaddress.ip_address("93.184.215.14")
    private = ipaddress.ip_address("192.168.0.10")
    assert is_allowed_address(public)
    assert not is_allowed_address(private)
    assert is_allowed_address(private, [ipaddress.ip_network("192.168.0.0/24")])
    assert not is_allowed_address(private, [ipaddress.ip_network("192.168.1.0/24")])
    assert not is_allowed_address(ipaddress.ip_address("::1"), LOOPBACK_ONLY)


def test_settings_parse_comma_separated_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/8, 127.0.0.1 ,::1/128")
    monkeypatch.setenv("KENNEL_WEBHOOK_ALLOW_HTTP", "true")
    settings = Settings()
    assert settings.allow_private_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.webhook_allow_http is True
    monkeypatch.delenv("KENNEL_ALLOW_PRIVATE_NETWORKS")
    monkeypatch.delenv("KENNEL_WEBHOOK_ALLOW_HTTP")
    defaults = Settings()
    assert defaults.allow_private_networks == () and defaults.webhook_allow_http is False


def test_settings_refuse_a_bad_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/8,intranet")
    with pytest.raises(ValueError, match="intranet"):
        Settings()
