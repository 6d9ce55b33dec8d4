"""Connecting only to addresses the endpoint policy allows, checked when the connection is made.

The sender's aiohttp connector resolves host names through `VettingResolver`: it resolves the
host itself, checks every address against the policy and hands the connector only the allowed
addresses, by number; the connector connects to those, so there is no second lookup a rebinding
DNS server could answer differently. A host written as an address never reaches a resolver, so
`literal_refusal` checks it before the request. TLS still runs against the host name (aiohttp
passes the URL's host as SNI and for certificate checks) and the Host header is the URL's, so a
vetted connection is indistinguishable from an ordinary one to the endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult

from herald.core.addresses import Address
from herald.core.subscriptions import EndpointPolicy, literal_address

Lookup = Callable[[str, int, int], Awaitable[list[Address]]]
"""Resolves (host, port, address family) to addresses in resolver order."""


class EndpointRefused(OSError):
    """The endpoint's host resolves only to addresses the policy refuses."""


async def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[Address]:
    """The addresses of a host (a literal address resolves to itself), in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host.strip("[]"), port, family=family, type=socket.SOCK_STREAM
    )
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def vetted_addresses(
    policy: EndpointPolicy,
    host: str,
    port: int,
    family: int = socket.AF_UNSPEC,
    lookup: Lookup = resolve,
) -> list[Address]:
    """The host's addresses Herald may connect to; EndpointRefused when there are none."""
    try:
        addresses = await lookup(host, port, family)
    except (OSError, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    if policy.allowed_host(host):
        return addresses
    allowed = [a for a in addresses if policy.address_refusal(host, a) is None]
    if not allowed:
        reasons = (
            "; ".join(str(policy.address_refusal(host, a)) for a in addresses[:3]) or "no address"
        )
        raise EndpointRefused(f"{host} resolves only to refused addresses: {reasons}")
    return allowed


def literal_refusal(policy: EndpointPolicy, host: str) -> str | None:
    """Why a host written as an address (or an IPv4 shorthand) may not be connected to."""
    address = literal_address(host)
    return None if address is None else policy.address_refusal(host, address)


class VettingResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses the policy allows."""

    def __init__(self, policy: EndpointPolicy, lookup: Lookup = resolve) -> None:
        self.policy = policy
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve, vet, and return the allowed addresses as numbers (no second lookup)."""
        addresses = await vetted_addresses(self.policy, host, port, family, self._lookup)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


def vetting_connector(
    policy: EndpointPolicy,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 200,
    keepalive_expiry: float = 5.0,
    lookup: Lookup = resolve,
) -> aiohttp.TCPConnector:
    """A connection pool (per origin, `max_connections` in all) on a `VettingResolver`.

    No DNS cache: every new connection resolves and vets its host again, as the first did.
    Certificates are checked against certifi's CA bundle (the one httpx used) unless
    `ssl_context` says otherwise; environment variables change nothing (no proxies either).
    """
    return aiohttp.TCPConnector(
        resolver=VettingResolver(policy, lookup),
        use_dns_cache=False,
        ssl=ssl_context or ssl.create_default_context(cafile=certifi.where()),
        limit=max_connections,
        keepalive_timeout=keepalive_expiry,
    )


def refused_reason(exc: BaseException) -> str | None:
    """The policy's reason when a connection error was caused by a refused endpoint."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EndpointRefused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
