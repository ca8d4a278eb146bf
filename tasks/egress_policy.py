"""Which addresses a tenant's webhook may reach: public ones only, unless the operator allows more.

Tenants write their own journeys, so a webhook URL is untrusted input. The worker runs inside the
platform's network, next to PostgreSQL, Redis, the broker and a cloud metadata service; a
webhook that could name those would let any tenant probe and call them. So an address is
refused when it lies in any range that is not public unicast on the Internet (the IANA
special-purpose registries), whatever form the URL gave it in:

* IPv4: this-network 0/8, private 10/8, 172.16/12, 192.168/16, CGNAT 100.64/10, loopback 127/8,
  link-local 169.254/16 (the cloud metadata address 169.254.169.254 among them), IETF protocol
  assignments 192.0.0/24, the documentation nets, the deprecated 6to4 relay 192.88.99/24,
  benchmarking 198.18/15, multicast 224/4, reserved 240/4 and broadcast.
* IPv6: anything outside global unicast 2000::/3 (loopback, unspecified, IPv4-compatible,
  discard-only, unique-local fc00::/7, link-local fe80::/10, site-local, multicast, ...), and
  inside it the IETF protocol assignments 2001::/23 (Teredo 2001::/32 among them), documentation
  2001:db8::/32 and 3fff::/20, 6to4 2002::/16 and SRv6 5f00::/16.
* IPv6 forms that carry an IPv4 address are judged by that IPv4 address: IPv4-mapped
  ::ffff:0:0/96 (the kernel connects to the IPv4 address) and the NAT64 well-known prefix
  64:ff9b::/96 (a NAT64 gateway does). On an IPv6-only network with DNS64 every IPv4-only
  receiver appears as 64:ff9b::a.b.c.d, so a public embedded address stays allowed there;
  64:ff9b::10.0.0.5 is refused like 10.0.0.5. The local-use NAT64 prefix 64:ff9b:1::/48 is
  site-specific and refused outright. 6to4 (2002::/16) and Teredo embed an IPv4 address too,
  but both are deprecated relay mechanisms no receiver needs: refused whole rather than decoded.
* Decimal, octal, hex and shortened IPv4 forms (2130706433, 0177.0.0.1, 127.1) are not special
  cases: the check runs on the address the resolver returns, which is the canonical one.

Python's own `is_private`/`is_global` are not used: their tables changed between patch
releases (3.11.7 calls ::1.2.3.4 global), and this decision must not move with the interpreter.

WEBHOOK_ALLOWED_NETWORKS lets an operator who self-hosts receivers allow specific networks; an
allowed network wins over every rule above (it is the operator's explicit decision).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*specs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), name) for cidr, name in specs)


# (network, the name reported for a refusal: a metrics label and a log field, never stored)
FORBIDDEN_IPV4 = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
FORBIDDEN_IPV6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "nat64_local"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "site_local"),
    ("ff00::/8", "multicast"),
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),
)
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really leads to (IPv4-mapped, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in IPV4_MAPPED or address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_range(address: IPAddress) -> str | None:
    """The name of the non-public range the address lies in, or None for a public address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return forbidden_range(inner)
    if isinstance(address, ipaddress.IPv4Address):
        return next((name for net, name in FORBIDDEN_IPV4 if address in net), None)
    for net, name in FORBIDDEN_IPV6:
        if address in net:
            return name
    return None if address in GLOBAL_UNICAST_IPV6 else "reserved"


def parse_allowed_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs; a bare address is a /32 or /128. ValueError names the bad entry."""
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError:
            try:
                loose = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network (CIDR) or address") from None
            raise ValueError(
                f"{entry!r} has host bits set (did you mean {loose.with_prefixlen}?)"
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus whatever the operator allowed."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """None if a webhook may connect to this address, else the name of its range."""
        if self._allowed(address):
            return None
        return forbidden_range(address)

    def _allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        return any(
            candidate in network
            for candidate in candidates
            for network in self.allowed_networks
            if candidate.version == network.version
        )


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names without any DNS lookup: an IP literal in any of the forms
    the resolver accepts (127.0.0.1, ::1, 2130706433, 0x7f.1, 0177.0.0.1), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if not host or not all(part for part in host.split(".")):
        return None
    try:
        # inet_aton is what getaddrinfo uses for IPv4 literals: it accepts the legacy forms.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def first_refusal(
    policy: AddressPolicy, addresses: Iterable[IPAddress]
) -> tuple[IPAddress, str] | None:
    for address in addresses:
        refused = policy.refusal(address)
        if refused is not None:
            return address, refused
    return None
