"""JWK sets fetched from URLs (a client's jwks_uri, an external issuer's JWKS), cached.

A URL must pass the same endpoint policy as subscriber endpoints (https and public addresses
unless the operator allows otherwise); redirects are not followed; a set is kept for
CACHE_SECONDS and fetched again at once (at most every MIN_REFETCH_SECONDS) when a token
names a kid the cached set lacks, so a key rotation at the source is picked up.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from herald.core.errors import FhirError
from herald.core.subscriptions import EndpointPolicy

CACHE_SECONDS = 300.0
MIN_REFETCH_SECONDS = 10.0
MAX_BYTES = 256 * 1024
TIMEOUT_SECONDS = 5.0


class KeySetUnavailable(Exception):
    """The JWK set could not be fetched or read."""


def public_key_set(document: Any) -> KeySet:
    """A JWK set of public RSA and EC keys; ValueError when it is anything else."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWK set is a JSON object with a 'keys' array")
    try:
        key_set = KeySet.import_key_set({"keys": document["keys"]})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the JWK set cannot be read: {exc}") from exc
    for key in key_set:
        if key.key_type not in ("RSA", "EC"):
            raise ValueError(f"key {key.kid!r} is {key.key_type}; only RSA and EC keys are taken")
        if key.is_private:
            raise ValueError(f"key {key.kid!r} is a private key; register the public key only")
    return key_set


class RemoteKeySets:
    """Fetches and caches JWK sets by URL."""

    def __init__(self, policy: EndpointPolicy, client: httpx.AsyncClient | None = None) -> None:
        self._policy = policy
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        self._cache: dict[str, tuple[float, KeySet]] = {}
        self.min_refetch_seconds = MIN_REFETCH_SECONDS

    async def get(self, url: str, *, refresh: bool = False) -> KeySet:
        """The key set at `url`, from the cache unless it is old (or `refresh` and not fresh)."""
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None:
            age = now - cached[0]
            if age < CACHE_SECONDS and not (refresh and age >= self.min_refetch_seconds):
                return cached[1]
        key_set = await self._fetch(url)
        self._cache[url] = (now, key_set)
        return key_set

    async def for_kid(self, url: str, kid: str | None) -> KeySet:
        """The key set at `url`, fetched again when it lacks the kid a token names."""
        key_set = await self.get(url)
        if kid and all(k.kid != kid for k in key_set):
            key_set = await self.get(url, refresh=True)
        return key_set

    async def _fetch(self, url: str) -> KeySet:
        try:
            self._policy.check(url)
        except FhirError as exc:
            raise KeySetUnavailable(f"the JWKS URL is not allowed: {exc.diagnostics}") from exc
        body = bytearray()
        try:
            async with self._client.stream(
                "GET", url, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise KeySetUnavailable(f"the JWKS URL answered {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise KeySetUnavailable(f"the JWKS is larger than {MAX_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise KeySetUnavailable(f"fetching the JWKS failed: {type(exc).__name__}") from exc
        try:
            return public_key_set(orjson.loads(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise KeySetUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
