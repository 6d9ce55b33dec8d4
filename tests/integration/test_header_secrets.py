"""channel.header values at rest: encrypted with HERALD_SECRETS_KEY, readable after rotation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from herald.core.errors import SecretsKeyError
from herald.core.resources import with_version
from herald.runtime.store import header_secrets
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database
from herald.runtime.store.tables import subscriptions
from tests.support.fhir import backport_subscription

SECRET_HEADER = "Authorization: Bearer s3cr3t-of-the-subscriber"


@pytest.fixture
def restore_cipher() -> Iterator[None]:
    yield
    header_secrets.configure(None)


async def raw_content(database: Database) -> str:
    async with database.read() as connection:
        return str(await connection.scalar(select(subscriptions.c.content)))


async def test_headers_are_encrypted_at_rest_and_keys_rotate(
    database: Database, restore_cipher: None
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    resource = with_version(
        backport_subscription("https://example.org/hook", headers=[SECRET_HEADER]),
        "s1",
        1,
        "2026-12-03T00:00:00Z",
    )
    header_secrets.configure(old)
    async with database.transaction() as connection:
        await registry.insert_new(connection, resource, status="requested", topic="t", owner="a")
    assert "s3cr3t" not in await raw_content(database)
    async with database.read() as connection:
        stored = await registry.get(connection, "s1")
    assert stored is not None and stored.resource["channel"]["header"] == [SECRET_HEADER]

    # Rotation: the new key first, every row re-encrypted, then the old key can go.
    header_secrets.configure(f"{new},{old}")
    before = await raw_content(database)
    async with database.transaction() as connection:
        assert await registry.rotate_header_secrets(connection) == 1
    assert await raw_content(database) != before
    header_secrets.configure(new)
    async with database.read() as connection:
        stored = await registry.get(connection, "s1")
    assert stored is not None and stored.resource["channel"]["header"] == [SECRET_HEADER]

    # Without the key that encrypted them, headers are not silently lost or garbled.
    header_secrets.configure(old)
    async with database.read() as connection:
        with pytest.raises(SecretsKeyError):
            await registry.get(connection, "s1")
