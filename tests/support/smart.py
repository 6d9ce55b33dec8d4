"""SMART Backend Services from the client's side, for tests: real keys, real signed assertions,
a token cache as an httpx.Auth, and Standard Webhooks signatures for the Canvas source."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from standardwebhooks.webhooks import Webhook

from herald.core.fhir import format_instant, utc_now
from herald.receiver.smart import ASSERTION_TYPE, BackendServicesAuth
from herald.runtime.store import clients
from herald.runtime.store.clients import Client
from herald.runtime.store.database import Database

ALL_SCOPES = "system/Subscription.cruds system/Task.cruds"
CANVAS_SECRET = "whsec_" + base64.b64encode(b"herald-test-canvas-secret-32-byte").decode()


def new_key(algorithm: str = "ES384") -> Key:
    """A fresh private key for RS384 (RSA 2048) or ES384 (P-384), with a kid."""
    if algorithm == "RS384":
        return RSAKey.generate_key(2048, {"alg": algorithm}, auto_kid=True)
    return ECKey.generate_key("P-384", {"alg": algorithm}, auto_kid=True)


@dataclass
class ApiClient:
    """A client's identity: its id and private key (the public half is what Herald registers)."""

    client_id: str
    key: Key = field(default_factory=new_key)

    @property
    def algorithm(self) -> str:
        """RS384 for an RSA key, ES384 for an EC key."""
        return "RS384" if self.key.key_type == "RSA" else "ES384"

    def jwks(self) -> dict[str, Any]:
        """The public JWK set to register."""
        return {"keys": [dict(self.key.as_dict(private=False))]}

    def registration(self, scope: str = ALL_SCOPES, organizations: tuple[str, ...] = ()) -> Client:
        """What registering this client stores."""
        return Client(
            id=self.client_id,
            scopes=scope,
            organizations=organizations,
            jwks=self.jwks(),
            created_at=format_instant(utc_now()),
        )

    def write_jwks(self, folder: Path) -> Path:
        """The public JWK set as a file, for `herald clients add --jwks`."""
        path = folder / f"{uuid.uuid4().hex}.jwks.json"
        path.write_bytes(orjson.dumps(self.jwks()))
        return path

    def assertion(
        self,
        token_url: str,
        *,
        header: dict[str, Any] | None = None,
        key: Key | None = None,
        lifetime: int = 120,
        **claims: Any,
    ) -> str:
        """A signed client assertion (RFC 7523); `claims` override or (None) drop the defaults."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + lifetime,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        signer = key or self.key
        algorithm = "RS384" if signer.key_type == "RSA" else "ES384"
        return jwt.encode(
            {"alg": algorithm, "kid": signer.kid, **(header or {})},
            body,
            signer,
            algorithms=[algorithm],
        )

    def token_form(self, token_url: str, scope: str = ALL_SCOPES, **claims: Any) -> dict[str, str]:
        """The form of a token request."""
        return {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(token_url, **claims),
        }


class SmartAuth(BackendServicesAuth):
    """Herald's own SMART client (as `herald receive` uses it) for a test's ApiClient."""

    def __init__(self, client: ApiClient, token_url: str, scope: str = ALL_SCOPES) -> None:
        super().__init__(client.client_id, cast(ECKey | RSAKey, client.key), token_url, scope)


def register(
    env: dict[str, str],
    client: ApiClient,
    *,
    scope: str = ALL_SCOPES,
    organizations: tuple[str, ...] = (),
) -> None:
    """Register a client in the database of `env` (what `herald clients add` does, without
    starting a process for it)."""
    asyncio.run(_register(env["HERALD_DATABASE_URL"], client, scope, organizations))


async def _register(
    database_url: str, client: ApiClient, scope: str, organizations: tuple[str, ...]
) -> None:
    database = Database(database_url)
    try:
        await database.migrate()
        async with database.transaction() as connection:
            await clients.add(connection, client.registration(scope, organizations))
    finally:
        await database.aclose()


def register_with_cli(
    env: dict[str, str],
    client: ApiClient,
    folder: Path,
    *,
    scope: str = ALL_SCOPES,
    organizations: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`herald clients add` in the database of `env`, as an operator does."""
    command = [sys.executable, "-m", "herald.cli", "clients", "add", client.client_id]
    command += ["--jwks", str(client.write_jwks(folder)), "--scope", scope]
    for organization in organizations:
        command += ["--organization", organization]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def webhook_headers(
    body: bytes,
    *,
    secret: str = CANVAS_SECRET,
    webhook_id: str | None = None,
    timestamp: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers of a delivery (signed with the standardwebhooks library)."""
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


# Herald processes the tests started with authentication on, by origin (scheme://host:port),
# so that fhir_client() gives any test a client with a token of a registered client.
_AUTH: dict[str, httpx.Auth] = {}


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"


def remember_auth(root: str, auth: httpx.Auth) -> None:
    """Record the auth of the Herald serving at `root`."""
    _AUTH[_origin(root)] = auth


def forget_auth(root: str) -> None:
    """Forget it (the process stopped)."""
    _AUTH.pop(_origin(root), None)


def auth_for(url: str) -> httpx.Auth | None:
    """The auth to use against the Herald serving `url` (None when it has no authentication)."""
    return _AUTH.get(_origin(url))


def fhir_client(base_url: str, **kwargs: Any) -> httpx.Client:
    """An httpx.Client of a Herald's FHIR base, authenticated when that Herald wants tokens."""
    kwargs.setdefault("timeout", 10)
    return httpx.Client(base_url=base_url, auth=auth_for(base_url), **kwargs)
