"""Which addresses a tenant's webhook may reach: classification only, no traffic at all."""

from __future__ import annotations

import ipaddress

import pytest

from tasks.egress_policy import (
    AddressPolicy,
    embedded_ipv4,
    forbidden_range,
    literal_address,
    parse_allowed_networks,
)
from tasks.settings import EngineSettings

ip = ipaddress.ip_address

FORBIDDEN = [
    # IPv4, each range at its edges
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "unspecified"),
    ("10.0.0.0", "private"),
    ("10.0.0.5", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.0", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link_local"),
    ("169.254.169.254", "link_local"),  # the cloud metadata service
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.10", "documentation"),
    ("192.88.99.1", "reserved"),
    ("192.168.0.1", "private"),
    ("192.168.255.255", "private"),
    ("198.18.0.1", "reserved"),
    ("198.19.255.255", "reserved"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated)
    ("100::1", "reserved"),  # discard-only
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link_local"),
    ("febf:ffff::1", "link_local"),
    ("fec0::1", "site_local"),
    ("ff02::1", "multicast"),
    ("2001::1", "reserved"),  # Teredo
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),  # Teredo for 192.0.2.45
    ("2001:2::1", "reserved"),  # benchmarking
    ("2001:db8::1", "documentation"),
    ("2002:7f00:1::1", "6to4"),  # 6to4 embedding 127.0.0.1
    ("2002:808:808::1", "6to4"),  # 6to4 embedding a public address: refused whole
    ("3fff::1", "documentation"),
    ("5f00::1", "reserved"),
    ("4000::1", "reserved"),  # outside 2000::/3: not allocated
    ("64:ff9b:1::a00:5", "nat64_local"),
    # IPv4 inside IPv6: judged by the IPv4 address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.5", "private"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::10.0.0.5", "private"),
    ("64:ff9b::169.254.169.254", "link_local"),
    ("64:ff9b::100.64.0.1", "cgnat"),
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "9.255.255.255",  # next to 10/8
    "11.0.0.0",
    "100.63.255.255",  # next to 100.64/10
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",  # next to 172.16/12
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",  # next to multicast
    "2606:4700:4700::1111",
    "2a00:1450:4001:81b::200e",
    "2001:200::1",  # just past 2001::/23
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::8.8.8.8",  # NAT64 (DNS64) of a public IPv4 receiver
]


@pytest.mark.parametrize(("address", "expected"), FORBIDDEN)
def test_non_public_addresses_are_refused_by_range(address: str, expected: str) -> None:
    assert forbidden_range(ip(address)) == expected
    assert AddressPolicy().refusal(ip(address)) == expected


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_range(ip(address)) is None
    assert AddressPolicy().refusal(ip(address)) is None


def test_embedded_ipv4_is_read_from_mapped_and_nat64_only() -> None:
    assert embedded_ipv4(ip("::ffff:10.1.2.3")) == ip("10.1.2.3")
    assert embedded_ipv4(ip("64:ff9b::10.1.2.3")) == ip("10.1.2.3")
    assert embedded_ipv4(ip("2002:a01:203::1")) is None  # 6to4 is refused whole instead
    assert embedded_ipv4(ip("10.1.2.3")) is None


def test_allowed_networks_win_and_nothing_else_does() -> None:
    policy = AddressPolicy(parse_allowed_networks("10.0.0.0/8, 127.0.0.1, fd00::/8"))
    assert policy.refusal(ip("10.20.30.40")) is None
    assert policy.refusal(ip("::ffff:10.20.30.40")) is None  # the same host, mapped
    assert policy.refusal(ip("64:ff9b::10.20.30.40")) is None
    assert policy.refusal(ip("127.0.0.1")) is None
    assert policy.refusal(ip("127.0.0.2")) == "loopback"  # a single address is a /32
    assert policy.refusal(ip("fd00::5")) is None
    assert policy.refusal(ip("fc00::5")) == "private"
    assert policy.refusal(ip("169.254.169.254")) == "link_local"
    assert policy.refusal(ip("192.168.1.1")) == "private"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        (" , ", ()),
        ("127.0.0.0/8", ("127.0.0.0/8",)),
        ("10.1.2.3", ("10.1.2.3/32",)),
        ("::1", ("::1/128",)),
        (" 10.0.0.0/8 ,fd00::/8 ", ("10.0.0.0/8", "fd00::/8")),
    ],
)
def test_parse_allowed_networks(raw: str, expected: tuple[str, ...]) -> None:
    assert tuple(n.with_prefixlen for n in parse_allowed_networks(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)"),
        ("intranet", "'intranet' is not an IP network (CIDR) or address"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP network"),
        ("127.0.0.0/8;10.0.0.0/8", "is not an IP network"),
    ],
)
def test_a_malformed_allow_list_is_a_config_error_naming_the_variable(
    raw: str, problem: str
) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_NETWORKS: ") as caught:
        EngineSettings.from_env({"WEBHOOK_ALLOWED_NETWORKS": raw})
    assert problem in str(caught.value)


def test_the_default_allows_no_network() -> None:
    assert EngineSettings.from_env({}).webhook_allowed_networks == ()
    assert EngineSettings().webhook_allowed_networks == ()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("127.1", "127.0.0.1"),  # shortened
        ("0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
        ("hooks.example.com", None),
        ("localhost", None),
        ("1.2.3.4.example.com", None),
        ("", None),
    ],
)
def test_literal_addresses_in_every_form_the_resolver_accepts(
    host: str, expected: str | None
) -> None:
    found = literal_address(host)
    assert (str(found) if found else None) == expected
