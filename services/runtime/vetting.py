"""Connecting only to addresses the endpoint policy allows, checked when the connection is made.

The sender's connections go through `VettingBackend`: it resolves the host itself, checks every
address against the policy and connects to an allowed address by number, so there is no second
lookup a rebinding DNS server could answer differently. TLS still runs against the host name
(httpcore passes the URL's host as SNI and for certificate checks) and the Host header is the
URL's, so a vetted connection is indistinguishable from an ordinary one to the endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

from herald.core.addresses import Address
from herald.core.subscriptions import EndpointPolicy


class EndpointRefused(httpcore.ConnectError):
    """The endpoint's host resolves only to addresses the policy refuses."""


async def resolve(host: str, port: int) -> list[Address]:
    """The addresses of a host (a literal address resolves to itself), in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM
    )
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def vetted_addresses(policy: EndpointPolicy, host: str, port: int) -> list[Address]:
    """The host's addresses Herald may connect to; EndpointRefused when there are none."""
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    allowed = [a for a in addresses if policy.address_refusal(host, a) is None]
    if not allowed:
        reasons = (
            "; ".join(str(policy.address_refusal(host, a)) for a in addresses[:3]) or "no address"
        )
        raise EndpointRefused(f"{host} resolves only to refused addresses: {reasons}")
    return allowed


class VettingBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(
        self, policy: EndpointPolicy, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, vet, then connect to the first allowed address that answers."""
        if self.policy.allowed_host(host):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        async with asyncio.timeout(timeout):
            addresses = await vetted_addresses(self.policy, host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # vetted_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are never an endpoint."""
        raise EndpointRefused("Unix socket endpoints are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry back-off)."""
        await self._inner.sleep(seconds)


class VettingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a `VettingBackend`."""

    def __init__(self, policy: EndpointPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx builds its httpcore pool without a way to pass a network backend; the pool it
        # built is replaced by an equal one that has ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=VettingBackend(policy),
        )


def refused_reason(exc: BaseException) -> str | None:
    """The policy's reason when an httpx error was caused by a refused endpoint."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EndpointRefused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
