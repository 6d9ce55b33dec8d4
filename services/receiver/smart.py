"""SMART Backend Services from the client's side: a signed assertion traded for an access token.

`herald receive` uses it to read `$events` from a Herald that requires authentication. The
client's private key signs the assertion (RFC 7523, RS384 or ES384); the token is kept until
30 seconds before it expires and fetched again after a 401.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, RSAKey

from herald.core.errors import AuthorizationFailed

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The assertion is used once, right away; SMART allows at most five minutes.
ASSERTION_LIFETIME = 300
# A token this close to its expiry is not used any more.
EXPIRY_MARGIN = 30.0

Key = ECKey | RSAKey


def load_private_key(path: Path) -> Key:
    """A client's private key from a JWK file (RSA for RS384, P-384 EC for ES384)."""
    try:
        key = JWKRegistry.import_key(orjson.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, JoseError) as exc:
        raise AuthorizationFailed(f"cannot read a JWK from {path}: {type(exc).__name__}") from exc
    if not isinstance(key, ECKey | RSAKey) or not key.is_private:
        raise AuthorizationFailed(f"{path} holds no private RSA or EC key")
    if isinstance(key, ECKey) and key.curve_name != "P-384":
        raise AuthorizationFailed(f"{path}: an EC key must be on P-384 (ES384)")
    return key


def client_assertion(client_id: str, key: Key, token_url: str) -> str:
    """A signed client assertion for the token endpoint at `token_url`."""
    now = int(time.time())
    algorithm = "RS384" if isinstance(key, RSAKey) else "ES384"
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    header: dict[str, Any] = {"alg": algorithm}
    if key.kid:
        header["kid"] = key.kid
    return jwt.encode(header, claims, key, algorithms=[algorithm])


def token_endpoint(base: str, client: httpx.Client | None = None) -> str:
    """The token endpoint a FHIR server names in `{base}/.well-known/smart-configuration`."""
    url = f"{base.rstrip('/')}/.well-known/smart-configuration"
    try:
        answer = (client or httpx).get(url, headers={"Accept": "application/json"}, timeout=10)
        answer.raise_for_status()
        found = answer.json()["token_endpoint"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise AuthorizationFailed(f"no token endpoint at {url}: {exc}") from exc
    # The assertion and the token travel over TLS whenever the FHIR base does.
    schemes = ("https://",) if base.startswith("https://") else ("https://", "http://")
    if not isinstance(found, str) or not found.startswith(schemes):
        raise AuthorizationFailed(f"{url} names no usable token endpoint")
    return found


class BackendServicesAuth(httpx.Auth):
    """An httpx.Auth that sends the client's bearer token, getting one when it has none."""

    requires_response_body = True

    def __init__(self, client_id: str, key: Key, token_url: str, scope: str) -> None:
        self.client_id = client_id
        self.key = key
        self.token_url = token_url
        self.scope = scope
        self._token: str | None = None
        self._expires = 0.0
        # httpx may run one Auth in several threads (sync clients) or tasks.
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the bearer token; get a new one when it is missing, old, or refused."""
        with self._lock:
            token = self._token if time.monotonic() < self._expires - EXPIRY_MARGIN else None
        if token is None:
            token = yield from self._new_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {(yield from self._new_token())}"
            yield request

    def _new_token(self) -> Generator[httpx.Request, httpx.Response, str]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self.client_id, self.key, self.token_url),
        }
        answer = yield httpx.Request("POST", self.token_url, data=form)
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or not isinstance(body.get("access_token"), str):
            # An OAuth error response says why (RFC 6749 5.2); it holds no secret.
            reason = body.get("error_description") or body.get("error") or answer.reason_phrase
            raise AuthorizationFailed(
                f"the token endpoint refused client {self.client_id!r}: "
                f"{answer.status_code} {str(reason)[:200]}"
            )
        token = str(body["access_token"])
        lifetime = float(body.get("expires_in", 300))
        with self._lock:
            self._token, self._expires = token, time.monotonic() + lifetime
        return token
