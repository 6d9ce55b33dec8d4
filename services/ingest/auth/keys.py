"""Herald's own keys that sign the access tokens it issues: from a file, or in the database.

The newest key signs; every kept key verifies, so tokens signed before a rotation stay valid
until they expire. Keys in the database are reloaded now and then (and at once when a token
names an unknown kid), so a rotation by `herald keys rotate` reaches every ingest process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import ECKey, Key, KeySet

from herald.core.fhir import format_instant, utc_now
from herald.runtime.store import clients as store
from herald.runtime.store.database import Database

ALGORITHM = "ES384"
CURVE = "P-384"
RELOAD_SECONDS = 30.0
KEPT_KEYS = 2


def new_key() -> ECKey:
    """A fresh P-384 key for ES384, with its RFC 7638 thumbprint as kid."""
    return ECKey.generate_key(CURVE, {"alg": ALGORITHM, "use": "sig"}, auto_kid=True)


async def rotate(database: Database) -> str:
    """Add a new signing key to the database (older ones beyond KEPT_KEYS are dropped)."""
    key = new_key()
    kid = str(key.kid)
    async with database.transaction() as connection:
        await store.add_key(
            connection,
            kid,
            dict(key.as_dict(private=True)),
            format_instant(utc_now()),
            keep=KEPT_KEYS,
        )
    return kid


def _load_file(path: Path) -> list[Key]:
    document = orjson.loads(path.read_bytes())
    key_set = KeySet.import_key_set(document)
    keys = list(key_set)
    for key in keys:
        curve = key.as_dict().get("crv")
        if not key.is_private or not (key.key_type == "RSA" or curve == CURVE):
            raise ValueError(f"{path}: every key must be a private RSA or P-384 EC key")
    return keys


class SigningKeys:
    """The signing key and the verification key set, kept fresh."""

    def __init__(self, database: Database, key_file: Path | None) -> None:
        self._database = database
        self._file = key_file
        self._keys: list[Key] = []
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def _reload(self) -> None:
        if self._file is not None:
            self._keys = _load_file(self._file)
        else:
            async with self._database.read() as connection:
                found = await store.keys(connection)
            if not found:
                await rotate(self._database)
                async with self._database.read() as connection:
                    found = await store.keys(connection)
            self._keys = [KeySet.registry_cls.import_key(jwk) for jwk in found]
        for key in self._keys:
            key.ensure_kid()
        self._loaded_at = time.monotonic()

    async def _fresh(self, *, force: bool = False) -> list[Key]:
        async with self._lock:
            stale = time.monotonic() - self._loaded_at > RELOAD_SECONDS
            recently = time.monotonic() - self._loaded_at < 1.0
            if not self._keys or stale or (force and self._file is None and not recently):
                await self._reload()
        return self._keys

    async def signing_key(self) -> Key:
        """The key that signs new tokens."""
        return (await self._fresh())[0]

    async def key_for(self, kid: str | None) -> Key | None:
        """The verification key a token names (reloading once when the kid is new)."""
        for force in (False, True):
            for key in await self._fresh(force=force):
                if key.kid == kid:
                    return key
        return None

    async def public_jwks(self) -> dict[str, Any]:
        """The public keys, as a JWK set."""
        return {"keys": [dict(key.as_dict(private=False)) for key in await self._fresh()]}


def algorithm_of(key: Key) -> str:
    """The JWS algorithm a signing key uses."""
    return ALGORITHM if key.key_type == "EC" else "RS384"
