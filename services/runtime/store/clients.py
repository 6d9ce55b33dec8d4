"""Registered clients, one-time ids seen (replay protection), and Herald's token signing keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import ClientExists
from herald.runtime.store.tables import clients, seen_ids, signing_keys


@dataclass(frozen=True)
class Client:
    """A registered client: how it proves who it is, what it may do, whom it acts for."""

    id: str
    scopes: str
    organizations: tuple[str, ...] = ()
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    created_at: str = ""

    @property
    def tenant_organizations(self) -> frozenset[str] | None:
        """The organizations a tenant acts for; None for a client not restricted by them."""
        return frozenset(self.organizations) if self.organizations else None


def _client(row: Any) -> Client:
    return Client(
        id=row.id,
        scopes=row.scopes,
        organizations=tuple(orjson.loads(row.organizations)),
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        created_at=row.created_at,
    )


async def add(connection: AsyncConnection, client: Client) -> None:
    """Register a client; ClientExists when the id is taken."""
    try:
        async with connection.begin_nested():
            await connection.execute(
                insert(clients).values(
                    id=client.id,
                    jwks=orjson.dumps(client.jwks).decode() if client.jwks else None,
                    jwks_url=client.jwks_url,
                    scopes=client.scopes,
                    organizations=orjson.dumps(list(client.organizations)).decode(),
                    created_at=client.created_at,
                )
            )
    except IntegrityError as exc:
        raise ClientExists(f"client {client.id!r} is registered already") from exc


async def get(connection: AsyncConnection, client_id: str) -> Client | None:
    """One client, or None."""
    row = (await connection.execute(select(clients).where(clients.c.id == client_id))).first()
    return None if row is None else _client(row)


async def all_clients(connection: AsyncConnection) -> list[Client]:
    """Every client, by id."""
    return [_client(r) for r in await connection.execute(select(clients).order_by(clients.c.id))]


async def remove(connection: AsyncConnection, client_id: str) -> bool:
    """Unregister a client; False when it was not registered."""
    result = await connection.execute(delete(clients).where(clients.c.id == client_id))
    return bool(result.rowcount)


async def first_sighting(
    connection: AsyncConnection, kind: str, one_time_id: str, *, expires_at: int, now: int
) -> bool:
    """Record a one-time id until it expires; False when it was seen before (a replay)."""
    await connection.execute(delete(seen_ids).where(seen_ids.c.expires_at < now))
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    result = await connection.execute(
        dialect.insert(seen_ids)
        .values(kind=kind, id=one_time_id, expires_at=expires_at)
        .on_conflict_do_nothing()
    )
    return bool(result.rowcount)


async def seen(connection: AsyncConnection, kind: str, one_time_id: str) -> bool:
    """Whether a one-time id was recorded (and has not expired)."""
    found = await connection.scalar(
        select(seen_ids.c.expires_at).where(seen_ids.c.kind == kind, seen_ids.c.id == one_time_id)
    )
    return found is not None


async def keys(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Herald's signing keys (private JWKs), newest first."""
    rows = await connection.execute(
        select(signing_keys.c.jwk).order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
    )
    return [orjson.loads(jwk) for jwk in rows.scalars()]


async def add_key(
    connection: AsyncConnection, kid: str, jwk: dict[str, Any], created_at: str, *, keep: int
) -> None:
    """Add a signing key (it signs from now on) and drop all but the `keep` newest."""
    await connection.execute(
        insert(signing_keys).values(kid=kid, jwk=orjson.dumps(jwk).decode(), created_at=created_at)
    )
    rows = await connection.execute(
        select(signing_keys.c.kid).order_by(signing_keys.c.created_at.desc()).offset(keep)
    )
    old = list(rows.scalars())
    if old:
        await connection.execute(delete(signing_keys).where(signing_keys.c.kid.in_(old)))
