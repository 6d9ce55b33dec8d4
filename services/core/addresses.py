"""Which IP addresses a subscriber endpoint may resolve to (pure; the resolving is the sender's).

Only globally routable unicast addresses pass. IPv6 forms that carry an IPv4 address (IPv4-mapped
`::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo) are
judged by the IPv4 address inside them, so `[::ffff:127.0.0.1]` or `[2002:7f00:1::]` are loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64 prefix: what it translates to is a local decision, never public.
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Ranges Python 3.11's tables count as global although they are not publicly routable:
# CGNAT (RFC 6598) and the IETF protocol assignments (RFC 6890; 3.11 lists only parts of it).
_NOT_PUBLIC = (
    (ipaddress.IPv4Network("100.64.0.0/10"), "shared carrier-grade NAT"),
    (ipaddress.IPv4Network("192.0.0.0/24"), "IETF protocol assignment"),
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries, if it is one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address) -> str | None:
    """Why an endpoint may not be reached at this address, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return f"{address} is a scoped (link-local) address"
        if address in _NAT64_LOCAL:
            return f"{address} is in the local-use NAT64 prefix"
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = refusal(inner)
            return None if reason is None else f"{address} embeds {inner}: {reason}"
    for flag, what in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, flag):
            return f"{address} is not public ({what})"
    for network, what in _NOT_PUBLIC:
        if address in network:
            return f"{address} is not public ({what})"
    if not address.is_global:
        return f"{address} is not public (not globally routable)"
    return None


def parse_networks(entries: Iterable[str]) -> tuple[frozenset[str], tuple[Network, ...]]:
    """Split allowlist entries into host names (lower case, no trailing dot) and CIDR networks."""
    hosts: set[str] = set()
    networks: list[Network] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return frozenset(hosts), tuple(networks)
