"""Herald as a SMART Backend Services authorization server, and the check of bearer tokens.

The token endpoint takes a client_credentials grant with a JWT client assertion
(private_key_jwt, RFC 7523) signed RS384 or ES384 with a key of the client's registered JWK set,
and answers with a short-lived access token Herald signs itself. Bearer tokens are Herald's own,
or (with HERALD_AUTH_ISSUER) an external authorization server's, mapped to a registered client.
All JWS work is joserfc's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jwt import JWTClaimsRegistry

from herald.core.errors import Unauthenticated
from herald.core.fhir import new_id
from herald.core.scopes import PERMISSIONS, RESOURCE_TYPES, Permission, format_scopes, parse_scopes
from herald.ingest.auth.jwks import KeySetUnavailable, RemoteKeySets, public_key_set
from herald.ingest.auth.keys import SigningKeys, algorithm_of
from herald.runtime.settings import Settings
from herald.runtime.store import clients as store
from herald.runtime.store.clients import Client
from herald.runtime.store.database import Database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ALGORITHMS = ("RS384", "ES384")
EXTERNAL_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
MAX_ASSERTION_SECONDS = 300
LEEWAY_SECONDS = 30
CLIENT_CACHE_SECONDS = 5.0


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, status_code: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = status_code


@dataclass(frozen=True)
class Caller:
    """Who is calling: the client, what its token lets it do, and whom it acts for."""

    client_id: str | None
    permissions: frozenset[Permission]
    organizations: frozenset[str] | None = None

    def allows(self, resource_type: str, permission: str) -> bool:
        """Whether the token grants this interaction (a letter of `cruds`)."""
        return (resource_type, permission) in self.permissions


ANONYMOUS = Caller(None, frozenset((t, p) for t in RESOURCE_TYPES for p in PERMISSIONS))
"""The caller when authentication is off: the operator on a loopback Herald, allowed anything."""


def one_time_key(*parts: str) -> str:
    """A fixed-length key of a one-time id (client id and jti, or a webhook id)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _family(algorithm: str) -> str:
    return "EC" if algorithm.startswith("ES") else "RSA"


def _decode(
    token: str, key_set: KeySet, algorithms: Collection[str], header: Mapping[str, Any]
) -> jwt.Token:
    """Verify a compact JWS against the key its kid names (or each key of the alg's family)."""
    kid = header.get("kid")
    algorithm = str(header.get("alg"))
    if algorithm not in algorithms:
        raise JoseError(f"alg {algorithm!r} is not accepted; use one of {', '.join(algorithms)}")
    candidates: list[Key] = [
        k for k in key_set if (k.kid == kid if kid else True) and k.key_type == _family(algorithm)
    ]
    if not candidates:
        raise JoseError(f"no registered key fits kid {kid!r} and alg {algorithm}")
    error: JoseError = JoseError("no key verified the signature")
    for key in candidates:
        try:
            return jwt.decode(token, key, algorithms=[algorithm])
        except JoseError as exc:
            error = exc
    raise error


def _header_and_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, before any verification."""
    try:
        extracted = jws.extract_compact(token.encode())
        claims = orjson.loads(extracted.payload)
    except (JoseError, ValueError, orjson.JSONDecodeError) as exc:
        raise JoseError("not a compact JWS with a JSON payload") from exc
    if not isinstance(claims, dict):
        raise JoseError("the JWT claims are not a JSON object")
    return dict(extracted.headers()), claims


def _validate(claims: Mapping[str, Any], now: Callable[[], int], **expected: Any) -> None:
    options = {
        name: {"essential": True, **({"value": value} if value is not None else {})}
        for name, value in expected.items()
    }
    registry = JWTClaimsRegistry(now=now, leeway=LEEWAY_SECONDS, **cast(Any, options))
    registry.validate(dict(claims))


class AuthServer:
    """Issues access tokens to registered clients and turns bearer tokens into Callers."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.issuer = settings.fhir_base
        self.token_url = f"{settings.fhir_base}/auth/token"
        self.lifetime = settings.auth_token_lifetime
        self.external_issuer = settings.auth_issuer
        self.external_jwks = settings.auth_jwks_url
        self.external_audience = settings.auth_audience or settings.fhir_base
        self.keys = SigningKeys(database, settings.auth_signing_key_file)
        self.remote = RemoteKeySets(settings.endpoint_policy)
        self._database = database
        self._clients: dict[str, tuple[float, Client | None]] = {}
        self.client_cache_seconds = CLIENT_CACHE_SECONDS
        self._verified: dict[str, tuple[float, Caller]] = {}

    @staticmethod
    def now() -> int:
        """The current time in whole seconds (NumericDate)."""
        return int(time.time())

    async def client(self, client_id: str) -> Client | None:
        """A registered client (cached briefly, so a removal takes effect within seconds)."""
        cached = self._clients.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self.client_cache_seconds:
            return cached[1]
        async with self._database.read() as connection:
            found = await store.get(connection, client_id)
        if len(self._clients) > 10_000:
            self._clients.clear()
        self._clients[client_id] = (time.monotonic(), found)
        return found

    async def _client_keys(self, client: Client, kid: str | None) -> KeySet:
        if client.jwks is not None:
            return public_key_set(client.jwks)
        assert client.jwks_url is not None
        return await self.remote.for_kid(client.jwks_url, kid)

    # -- the token endpoint --------------------------------------------------------------------

    async def issue(self, form: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """Answer a token request: the client id and the access token answer, or OAuthError."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is missing")
        client = await self._verify_assertion(assertion)
        registered = parse_scopes(client.scopes, strict=False)
        granted = parse_scopes(form.get("scope", ""), strict=False) & registered
        if not granted:
            raise OAuthError(
                "invalid_scope",
                f"none of the scopes asked for ({form.get('scope', '')!r}) is registered for "
                f"this client ({client.scopes})",
            )
        scope = format_scopes(granted)
        key = await self.keys.signing_key()
        now = self.now()
        token = jwt.encode(
            {"alg": algorithm_of(key), "kid": key.kid},
            {
                "iss": self.issuer,
                "aud": self.issuer,
                "sub": client.id,
                "client_id": client.id,
                "scope": scope,
                "iat": now,
                "exp": now + self.lifetime,
                "jti": new_id(),
            },
            key,
            algorithms=[algorithm_of(key)],
        )
        return client.id, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.lifetime,
            "scope": scope,
        }

    async def _verify_assertion(self, assertion: str) -> Client:
        def refuse(why: str) -> OAuthError:
            return OAuthError("invalid_client", why, 401)

        try:
            header, unverified = _header_and_claims(assertion)
        except JoseError as exc:
            raise refuse(f"client_assertion: {exc}") from exc
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise refuse("client_assertion has no iss (the client id)")
        client = await self.client(client_id)
        if client is None:
            raise refuse(f"client {client_id!r} is not registered")
        try:
            key_set = await self._client_keys(client, header.get("kid"))
            token = _decode(assertion, key_set, CLIENT_ALGORITHMS, header)
            _validate(
                token.claims,
                self.now,
                iss=client.id,
                sub=client.id,
                aud=self.token_url,
                exp=None,
                jti=None,
            )
        except KeySetUnavailable as exc:
            raise refuse(f"the client's JWK set is unavailable: {exc}") from exc
        except (JoseError, ValueError) as exc:
            raise refuse(f"client_assertion refused: {_describe(exc)}") from exc
        exp = token.claims["exp"]
        now = self.now()
        if exp > now + MAX_ASSERTION_SECONDS + LEEWAY_SECONDS:
            raise refuse(
                f"client_assertion exp is {exp - now} s ahead; at most {MAX_ASSERTION_SECONDS}"
            )
        async with self._database.transaction() as connection:
            first = await store.first_sighting(
                connection,
                "jti",
                one_time_key(client.id, str(token.claims["jti"])),
                expires_at=int(exp) + LEEWAY_SECONDS,
                now=now,
            )
        if not first:
            raise refuse("client_assertion jti was used before (a replay)")
        return client

    # -- bearer tokens ---------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Caller:
        """The Caller a bearer token speaks for; Unauthenticated when it is not valid.

        A verified token is remembered for a few seconds (never past its exp), so a client
        making many calls pays one signature check per few seconds, and a removed client
        loses access as fast as through the client cache.
        """
        remembered = self._verified.get(token)
        if remembered is not None and time.monotonic() < remembered[0]:
            return remembered[1]
        caller, expires = await self._authenticate(token)
        if len(self._verified) > 10_000:
            self._verified.clear()
        left = min(self.client_cache_seconds, expires - time.time())
        self._verified[token] = (time.monotonic() + left, caller)
        return caller

    async def _authenticate(self, token: str) -> tuple[Caller, float]:
        try:
            header, unverified = _header_and_claims(token)
            if self.external_issuer and unverified.get("iss") == self.external_issuer:
                return await self._external(token, header), float(unverified["exp"])
            key = await self.keys.key_for(header.get("kid"))
            if key is None:
                raise JoseError("the token names no key of this server")
            verified = _decode(token, KeySet([key]), [algorithm_of(key)], header)
            _validate(
                verified.claims,
                self.now,
                iss=self.issuer,
                aud=self.issuer,
                exp=None,
                client_id=None,
            )
        except KeySetUnavailable as exc:
            raise Unauthenticated(f"the issuer's keys are unavailable: {exc}") from exc
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"the access token is not valid: {_describe(exc)}") from exc
        caller = await self._caller(str(verified.claims["client_id"]), verified.claims["scope"])
        return caller, float(verified.claims["exp"])

    async def _external(self, token: str, header: Mapping[str, Any]) -> Caller:
        assert self.external_jwks is not None
        key_set = await self.remote.for_kid(self.external_jwks, header.get("kid"))
        verified = _decode(token, key_set, EXTERNAL_ALGORITHMS, header)
        claims = verified.claims
        _validate(claims, self.now, iss=self.external_issuer, aud=self.external_audience, exp=None)
        client_id = next(
            (claims[n] for n in ("client_id", "azp", "sub") if isinstance(claims.get(n), str)),
            None,
        )
        if client_id is None:
            raise JoseError("the token names no client (client_id, azp or sub)")
        scopes = claims.get("scope", claims.get("scp", ""))
        if isinstance(scopes, list):
            scopes = " ".join(str(s) for s in scopes)
        return await self._caller(client_id, str(scopes))

    async def _caller(self, client_id: str, scope: object) -> Caller:
        client = await self.client(client_id)
        if client is None:
            raise Unauthenticated(f"client {client_id!r} is not registered")
        # The registration may have narrowed since the token was issued.
        permissions = parse_scopes(str(scope), strict=False) & parse_scopes(
            client.scopes, strict=False
        )
        return Caller(client.id, permissions, client.tenant_organizations)

    async def aclose(self) -> None:
        """Close the JWKS client."""
        await self.remote.aclose()


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
