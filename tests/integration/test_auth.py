"""SMART Backend Services against the FHIR app, with real keys and real signed JWTs.

Each client has a freshly generated RS384 (RSA 2048) or ES384 (P-384) key; an external issuer
publishes its JWK set from a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from prometheus_client import CollectorRegistry

from herald.ingest.app import create_app
from herald.ingest.auth.server import AuthServer
from herald.ingest.context import IngestContext
from herald.runtime.logs import stamp_request_ids
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import clients
from herald.runtime.store.clients import Client
from herald.runtime.store.database import Database
from tests.support.fhir import FHIR_JSON, backport_subscription
from tests.support.smart import ALL_SCOPES, CANVAS_SECRET, ApiClient, new_key

BASE = "http://herald.test/fhir"
TOKEN_URL = f"{BASE}/auth/token"
ISSUER = "https://idp.example.org/realms/payers"


class Jwks:
    """A JWK set served over HTTP on loopback, as an authorization server publishes it."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                state.fetches += 1
                body = orjson.dumps(state.document)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[tuple[Jwks, RSAKey]]:
    """An external issuer's signing key and its published JWK set."""
    key = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)
    jwks = Jwks()
    jwks.document = {"keys": [key.as_dict(private=False)]}
    try:
        yield jwks, key
    finally:
        jwks.close()


@pytest.fixture
async def app(database: Database, idp: tuple[Jwks, RSAKey]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url="sqlite://",
        base_url=BASE,
        canvas_secret=CANVAS_SECRET,
        auth="smart",
        auth_issuer=ISSUER,
        auth_jwks_url=idp[0].url,
        auth_audience="herald",
        # Small, so that the per-client quota is reached within a test.
        max_subscriptions_per_client=2,
    )
    auth = AuthServer(settings, database)
    # Short caches, so that removals and key rotations show within the test.
    auth.client_cache_seconds = 0.2
    auth.remote.min_refetch_seconds = 0.2
    ctx = IngestContext(
        settings,
        database,
        load_topics(),
        Metrics(),
        auth=auth,
    )
    transport = httpx.ASGITransport(app=create_app(ctx, _ready))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http
    await auth.aclose()


def app_metrics(http: httpx.AsyncClient) -> CollectorRegistry:
    """The metrics registry of the app behind an ASGI-transport client."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    registry: CollectorRegistry = transport.app.state.herald.metrics.registry  # type: ignore[attr-defined]
    return registry


async def _ready() -> dict[str, bool]:
    return {"database": True}


async def register(
    database: Database,
    client: ApiClient,
    scope: str = ALL_SCOPES,
    organizations: tuple[str, ...] = (),
) -> ApiClient:
    async with database.transaction() as connection:
        await clients.add(connection, client.registration(scope, organizations))
    return client


async def token(http: httpx.AsyncClient, client: ApiClient, scope: str = ALL_SCOPES) -> str:
    response = await http.post("/fhir/auth/token", data=client.token_form(TOKEN_URL, scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


_JSON = {"Content-Type": FHIR_JSON}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_discovery_and_capability_statement_are_public(app: httpx.AsyncClient) -> None:
    config = (await app.get("/fhir/.well-known/smart-configuration")).json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["grant_types_supported"] == ["client_credentials"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert "system/Task.rs" in config["scopes_supported"]
    metadata = await app.get("/fhir/metadata")
    assert metadata.status_code == 200
    security = metadata.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"].endswith("/oauth-uris")
    assert uris["extension"] == [{"url": "token", "valueUri": TOKEN_URL}]
    keys = (await app.get("/fhir/auth/jwks")).json()["keys"]
    assert keys and all("d" not in k for k in keys)


async def test_anonymous_calls_get_401_with_a_bearer_challenge(app: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/fhir/Task"),
        ("GET", "/fhir/Subscription"),
        ("POST", "/fhir/Subscription"),
        ("DELETE", "/fhir/Task/x"),
        ("GET", "/fhir/Subscription/$status"),
        ("GET", "/fhir/Basic"),
        ("GET", "/fhir/no-such-route"),
    ]:
        response = await app.request(method, path)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="herald"'
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Content-Type"].startswith(FHIR_JSON)
        assert response.json()["resourceType"] == "OperationOutcome"
    # The admin endpoints are not on the FHIR listener.
    for path in ("/metrics", "/healthz", "/readyz"):
        assert (await app.get(path)).status_code == 404


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
async def test_a_registered_client_gets_a_token_and_uses_it(
    app: httpx.AsyncClient, database: Database, algorithm: str
) -> None:
    client = await register(database, ApiClient(f"ehr-{algorithm}", new_key(algorithm)))
    response = await app.post(
        "/fhir/auth/token", data=client.token_form(TOKEN_URL, "system/Task.read openid")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 3600
    assert body["scope"] == "system/Task.rs"  # asked ∩ registered, written as SMART v2
    assert response.headers["Cache-Control"] == "no-store"
    herald_keys = KeySet.import_key_set((await app.get("/fhir/auth/jwks")).json())
    claims = jwt.decode(body["access_token"], herald_keys, algorithms=["ES384"])
    assert claims.claims["client_id"] == client.client_id
    assert claims.claims["exp"] - claims.claims["iat"] == body["expires_in"]
    found = await app.get("/fhir/Task", headers=bearer(body["access_token"]))
    assert found.status_code == 200, found.text


async def test_bad_client_assertions_are_refused(
    app: httpx.AsyncClient, database: Database
) -> None:
    client = await register(database, ApiClient("payer", new_key("ES384")))
    rsa_client = await register(database, ApiClient("engine", new_key("RS384")))
    now = int(time.time())
    stranger = ApiClient("payer", new_key("ES384"))  # right id, key that is not registered
    public_as_secret = OctKey.import_key(orjson.dumps(rsa_client.jwks()["keys"][0]))
    unsigned = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(
            orjson.dumps(
                {"iss": "payer", "sub": "payer", "aud": TOKEN_URL, "exp": now + 60, "jti": "x"}
            )
        )
        .rstrip(b"=")
        .decode()
        + "."
    )
    hmac_confusion = jwt.encode(
        {"alg": "HS384", "kid": rsa_client.key.kid},
        {"iss": "engine", "sub": "engine", "aud": TOKEN_URL, "exp": now + 60, "jti": "y"},
        public_as_secret,
        algorithms=["HS384"],
    )
    cases = {
        "expired": client.assertion(TOKEN_URL, exp=now - 120),
        "exp too far ahead": client.assertion(TOKEN_URL, exp=now + 3600),
        "wrong aud": client.assertion("https://elsewhere.example/token"),
        "wrong iss": client.assertion(TOKEN_URL, iss="engine"),
        "sub differs": client.assertion(TOKEN_URL, sub="someone"),
        "no jti": client.assertion(TOKEN_URL, jti=None),
        "no exp": client.assertion(TOKEN_URL, exp=None),
        "alg none": unsigned,
        "HS384 with the public key": hmac_confusion,
        "wrong key": stranger.assertion(TOKEN_URL),
        "unknown client": ApiClient("nobody").assertion(TOKEN_URL),
        "not a JWT": "not.a.jwt",
    }
    for why, assertion in cases.items():
        form = {**client.token_form(TOKEN_URL), "client_assertion": assertion}
        response = await app.post("/fhir/auth/token", data=form)
        assert response.status_code == 401, (why, response.text)
        assert response.json()["error"] == "invalid_client", why

    replayed = client.token_form(TOKEN_URL)
    assert (await app.post("/fhir/auth/token", data=replayed)).status_code == 200
    again = await app.post("/fhir/auth/token", data=replayed)
    assert again.status_code == 401 and "replay" in again.json()["error_description"]

    form = client.token_form(TOKEN_URL)
    for changed, error in [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"client_assertion_type": "basic"}, "invalid_request"),
        ({"scope": "system/Patient.read launch"}, "invalid_scope"),
    ]:
        response = await app.post("/fhir/auth/token", data={**form, **changed})
        assert response.status_code == 400, (changed, response.text)
        assert response.json()["error"] == error
    as_json = await app.post("/fhir/auth/token", json=client.token_form(TOKEN_URL))
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    metrics = app_metrics(app)
    assert (
        metrics.get_sample_value("herald_auth_token_requests_total", {"outcome": "invalid_client"})
        == len(cases) + 1
    )
    assert metrics.get_sample_value("herald_auth_token_requests_total", {"outcome": "issued"}) == 1


async def test_a_client_with_a_jwks_url_is_verified_with_the_keys_published_there(
    app: httpx.AsyncClient, database: Database
) -> None:
    client = ApiClient("engine", new_key("RS384"))
    published = Jwks()
    try:
        published.document = client.jwks()
        async with database.transaction() as connection:
            await clients.add(
                connection,
                Client(id="engine", scopes=ALL_SCOPES, jwks_url=published.url, created_at="x"),
            )
        assert (await token(app, client)).count(".") == 2
        # The client rotates its key: the new kid makes Herald fetch the set again.
        rotated = ApiClient("engine", new_key("ES384"))
        published.document = {"keys": [*client.jwks()["keys"], *rotated.jwks()["keys"]]}
        await asyncio.sleep(0.3)
        assert (await token(app, rotated)).count(".") == 2
        assert published.fetches == 2
        # A key the published set does not hold is refused.
        stranger = ApiClient("engine", new_key("ES384"))
        response = await app.post("/fhir/auth/token", data=stranger.token_form(TOKEN_URL))
        assert response.status_code == 401
    finally:
        published.close()


async def test_bad_bearer_tokens_are_refused(app: httpx.AsyncClient, database: Database) -> None:
    client = await register(database, ApiClient("payer"))
    good = await token(app, client)
    header, payload, signature = good.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(orjson.dumps({**claims, "client_id": "admin"}))
    tampered = f"{header}.{forged.rstrip(b'=').decode()}.{signature}"
    # A token signed by the client's own key is not one Herald issued.
    self_signed = client.assertion(BASE, client_id="payer", scope=ALL_SCOPES, aud=BASE, iss=BASE)
    for value in (tampered, self_signed, "garbage", good[:-4] + "AAAA"):
        response = await app.get("/fhir/Task", headers=bearer(value))
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    basic = await app.get("/fhir/Task", headers={"Authorization": "Basic cGF5ZXI6eA=="})
    assert 'error="invalid_request"' in basic.headers["WWW-Authenticate"]
    # A removed client's tokens stop working (once the client cache, seconds long, expires).
    async with database.transaction() as connection:
        await clients.remove(connection, "payer")
    await asyncio.sleep(0.3)
    assert (await app.get("/fhir/Task", headers=bearer(good))).status_code == 401


async def test_tokens_of_an_external_issuer(
    app: httpx.AsyncClient, database: Database, idp: tuple[Jwks, RSAKey]
) -> None:
    jwks, key = idp
    await register(database, ApiClient("payer-app"), scope="system/Task.rs")
    now = int(time.time())

    def issued(signer: RSAKey = key, **claims: Any) -> str:
        body = {
            "iss": ISSUER,
            "aud": "herald",
            "azp": "payer-app",
            "scope": "system/Task.rs system/Subscription.cruds",
            "exp": now + 300,
            "nbf": now - 10,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": signer.kid}, body, signer, algorithms=["RS256"])

    ok = await app.get("/fhir/Task", headers=bearer(issued()))
    assert ok.status_code == 200, ok.text
    scp = issued(scope=None, scp=["system/Task.rs"], azp=None, client_id="payer-app")
    assert (await app.get("/fhir/Task", headers=bearer(scp))).status_code == 200
    # The registration caps what the IdP's token says: no Subscription scope was registered.
    assert (await app.get("/fhir/Subscription", headers=bearer(issued()))).status_code == 403
    other = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)
    for why, value in {
        "expired": issued(exp=now - 60),
        "not yet valid": issued(nbf=now + 600),
        "wrong audience": issued(aud="someone-else"),
        "unregistered client": issued(azp="stranger"),
        "unknown key": issued(signer=other),
    }.items():
        response = await app.get("/fhir/Task", headers=bearer(value))
        assert response.status_code == 401, (why, response.text)
    # The IdP rotates its key: the new kid makes Herald fetch the set again.
    fetches = jwks.fetches
    jwks.document = {"keys": [other.as_dict(private=False)]}
    await asyncio.sleep(0.3)
    assert (await app.get("/fhir/Task", headers=bearer(issued(signer=other)))).status_code == 200
    assert jwks.fetches == fetches + 1


async def test_each_interaction_needs_its_scope(app: httpx.AsyncClient, database: Database) -> None:
    reader = await register(database, ApiClient("reader"), scope="system/Task.read")
    value = await token(app, reader, "system/Task.read")
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    headers = {**bearer(value), "Content-Type": FHIR_JSON}
    assert (await app.get("/fhir/Task", headers=headers)).status_code == 200
    for method, path, body in [
        ("POST", "/fhir/Task", task),
        ("PUT", "/fhir/Task/t1", {**task, "id": "t1"}),
        ("DELETE", "/fhir/Task/t1", None),
        ("GET", "/fhir/Subscription", None),
        ("POST", "/fhir/Subscription", backport_subscription("https://example.org/hook")),
        ("GET", "/fhir/Subscription/$status", None),
        ("PATCH", "/fhir/Task/t1", [{"op": "replace", "path": "/status", "value": "ready"}]),
        ("PUT", "/fhir/Task?identifier=x", task),
        ("DELETE", "/fhir/Task?identifier=x", None),
        ("GET", "/fhir/Subscription/_history", None),
        ("GET", "/fhir/Subscription/s1/_history", None),
    ]:
        response = await app.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"


async def _two_tenants(
    app: httpx.AsyncClient, database: Database
) -> tuple[dict[str, str], dict[str, str]]:
    """The request headers of two clients, of Organization/a and of Organization/b."""
    a = await register(database, ApiClient("payer-a"), organizations=("Organization/a",))
    b = await register(database, ApiClient("payer-b"), organizations=("Organization/b",))
    return (
        {**bearer(await token(app, a)), "Content-Type": FHIR_JSON},
        {**bearer(await token(app, b)), "Content-Type": FHIR_JSON},
    )


async def test_two_tenants_cannot_see_change_or_subscribe_to_each_other(
    app: httpx.AsyncClient, database: Database
) -> None:
    as_a, as_b = await _two_tenants(app, database)
    hook = "https://example.org/hook"

    for filters in [(), ("Task?status=requested",), ("Task?owner=Organization/b",)]:
        refused = await app.post(
            "/fhir/Subscription", json=backport_subscription(hook, *filters), headers=as_a
        )
        assert refused.status_code == 403, refused.text
        assert "owner or requester" in refused.json()["issue"][0]["diagnostics"]
    created = await app.post(
        "/fhir/Subscription",
        json=backport_subscription(hook, "Task?owner=Organization/a", headers=["X-Key: secret-a"]),
        headers=as_a,
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["channel"]["header"] == ["X-Key: secret-a"]
    sid = sub["id"]
    for method, path in [
        ("GET", f"/fhir/Subscription/{sid}"),
        ("DELETE", f"/fhir/Subscription/{sid}"),
        ("GET", f"/fhir/Subscription/{sid}/$status"),
        ("GET", f"/fhir/Subscription/{sid}/$events"),
    ]:
        response = await app.request(method, path, headers=as_b)
        assert response.status_code == 404, (method, path, response.text)
    hijack = {**sub, "channel": {**sub["channel"], "endpoint": "https://evil.example/hook"}}
    put = await app.put(f"/fhir/Subscription/{sid}", json=hijack, headers=as_b)
    assert put.status_code == 404
    listed = (await app.get("/fhir/Subscription", headers=as_b)).json()
    assert listed["total"] == 0 and "secret-a" not in orjson.dumps(listed).decode()
    statuses = (await app.get("/fhir/Subscription/$status", headers=as_b)).json()
    assert statuses["total"] == 0
    assert (await app.get("/fhir/Subscription", headers=as_a)).json()["total"] == 1
    assert (await app.get(f"/fhir/Subscription/{sid}", headers=as_a)).status_code == 200

    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    mine = {**task, "id": "ta", "owner": {"reference": "Organization/a"}}
    assert (await app.put("/fhir/Task/ta", json=mine, headers=as_a)).status_code == 201
    theirs = {**task, "id": "tb", "requester": {"reference": "Organization/b"}}
    assert (await app.put("/fhir/Task/tb", json=theirs, headers=as_a)).status_code == 403
    assert (await app.put("/fhir/Task/tb", json=theirs, headers=as_b)).status_code == 201
    assert (await app.get("/fhir/Task/ta", headers=as_b)).status_code == 404
    assert (await app.get("/fhir/Task/ta/_history/1", headers=as_b)).status_code == 404
    assert (await app.put("/fhir/Task/ta", json=mine, headers=as_b)).status_code == 404
    assert (await app.delete("/fhir/Task/ta", headers=as_b)).status_code == 404
    for headers, expected in ((as_a, ["ta"]), (as_b, ["tb"])):
        for found in (
            await app.get("/fhir/Task", headers=headers),
            await app.get("/fhir/Task?status=requested&_total=accurate", headers=headers),
            await app.post(
                "/fhir/Task/_search",
                content="intent=order",
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            ),
        ):
            bundle = found.json()
            assert [e["resource"]["id"] for e in bundle["entry"]] == expected
            assert bundle["total"] == 1

    # Task.output may name anything; _include returns only Tasks the searcher may see.
    leak = [
        {"type": {"text": "r"}, "valueReference": {"reference": r}}
        for r in ("Task/ta", f"Subscription/{sid}")
    ]
    pointing = {**theirs, "id": "tb2", "output": leak}
    assert (await app.put("/fhir/Task/tb2", json=pointing, headers=as_b)).status_code == 201
    included = (await app.get("/fhir/Task?_id=tb2&_include=Task:output", headers=as_b)).json()
    assert [e["resource"]["id"] for e in included["entry"]] == ["tb2"]
    assert "secret-a" not in orjson.dumps(included).decode()


async def test_history_and_conditional_interactions_keep_to_owner_and_tenant(
    app: httpx.AsyncClient, database: Database
) -> None:
    as_a, as_b = await _two_tenants(app, database)
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    mine = {**task, "id": "ta", "owner": {"reference": "Organization/a"}}
    assert (await app.put("/fhir/Task/ta", json=mine, headers=as_a)).status_code == 201
    sub = await app.post(
        "/fhir/Subscription",
        json=backport_subscription("https://example.org/hook", "Task?owner=Organization/a"),
        headers=as_a,
    )
    sid = sub.json()["id"]

    assert (await app.get(f"/fhir/Subscription/{sid}/_history", headers=as_b)).status_code == 404
    assert "entry" not in (await app.get("/fhir/Subscription/_history", headers=as_b)).json()
    own = (await app.get("/fhir/Subscription/_history", headers=as_a)).json()
    assert {e["resource"]["id"] for e in own["entry"]} == {sid}
    assert (await app.get("/fhir/Task/ta/_history", headers=as_b)).status_code == 404
    assert "entry" not in (await app.get("/fhir/Task/_history", headers=as_b)).json()
    assert len((await app.get("/fhir/Task/_history", headers=as_a)).json()["entry"]) == 1

    patch = [{"op": "replace", "path": "/status", "value": "ready"}]
    patch_headers = {**as_b, "Content-Type": "application/json-patch+json"}
    assert (await app.patch("/fhir/Task/ta", json=patch, headers=patch_headers)).status_code == 404
    # Conditional interactions select among the tenant's own Tasks only.
    found = await app.post(
        "/fhir/Task",
        json={**task, "owner": {"reference": "Organization/b"}},
        headers={**as_b, "If-None-Exist": "_id=ta"},
    )
    assert found.status_code == 201 and found.json()["id"] != "ta"
    assert (await app.delete("/fhir/Task?_id=ta", headers=as_b)).status_code == 204
    moved = {**task, "owner": {"reference": "Organization/b"}}
    assert (await app.put("/fhir/Task?_id=ta", json=moved, headers=as_b)).status_code == 201
    still = await app.get("/fhir/Task/ta", headers=as_a)
    assert still.status_code == 200 and still.json()["meta"]["versionId"] == "1"


async def test_a_client_owns_at_most_its_quota_of_live_subscriptions(
    app: httpx.AsyncClient, database: Database
) -> None:
    one = {**bearer(await token(app, await register(database, ApiClient("one")))), **_JSON}
    other = {**bearer(await token(app, await register(database, ApiClient("other")))), **_JSON}
    hook = "https://example.org/hook"
    held = []
    for _ in range(2):
        created = await app.post(
            "/fhir/Subscription", json=backport_subscription(hook), headers=one
        )
        assert created.status_code == 201, created.text
        held.append(created.json())
    refused = await app.post("/fhir/Subscription", json=backport_subscription(hook), headers=one)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "too-costly"
    assert "HERALD_MAX_SUBSCRIPTIONS_PER_CLIENT=2" in refused.json()["issue"][0]["diagnostics"]
    # Another client's quota is its own; a subscription turned off frees a place.
    mine = await app.post("/fhir/Subscription", json=backport_subscription(hook), headers=other)
    assert mine.status_code == 201
    off = {**held[0], "status": "off"}
    assert (
        await app.put(f"/fhir/Subscription/{off['id']}", json=off, headers=one)
    ).status_code == 200
    again = await app.post("/fhir/Subscription", json=backport_subscription(hook), headers=one)
    assert again.status_code == 201, again.text


async def test_the_audit_trail_has_one_line_per_interaction_without_phi(
    app: httpx.AsyncClient, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    client = await register(database, ApiClient("auditor"))
    headers = {**bearer(await token(app, client)), "Content-Type": FHIR_JSON, "X-Request-ID": "r1"}
    note = f"patient {uuid.uuid4().hex}"
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "description": note}
    stamp_request_ids()  # as `herald` does at start: records carry the request id
    with caplog.at_level(logging.INFO, logger="herald.audit"):
        # Only these interactions: the token request is logged too when an earlier test left
        # the herald loggers at INFO.
        caplog.clear()
        created = await app.post("/fhir/Task", json=task, headers=headers)
        await app.get(f"/fhir/Task/{created.json()['id']}", headers=headers)
        await app.get("/fhir/Task?status=requested", headers=headers)
        await app.get("/fhir/Task")
    records = [r for r in caplog.records if r.name == "herald.audit"]
    seen = [
        (r.interaction, r.resource_type, r.resource_id, r.status, r.client_id)  # type: ignore[attr-defined]
        for r in records
    ]
    task_id = created.json()["id"]
    assert seen == [
        ("create", "Task", task_id, 201, "auditor"),
        ("read", "Task", task_id, 200, "auditor"),
        ("search", "Task", None, 200, "auditor"),
        ("search", "Task", None, 401, None),
    ]
    assert records[0].request_id == "r1"  # type: ignore[attr-defined]
    assert records[0].at.endswith("Z") and len(records[0].at) == 24  # type: ignore[attr-defined]
    text = caplog.text
    assert note not in text and "Bearer" not in text and "requested" not in text


async def test_herald_signs_with_the_key_of_a_configured_file(
    database: Database, tmp_path: Path
) -> None:
    signing = new_key("ES384")
    key_file = tmp_path / "herald-keys.json"
    key_file.write_bytes(orjson.dumps({"keys": [signing.as_dict(private=True)]}))
    settings = Settings(
        database_url="sqlite://",
        base_url=BASE,
        canvas_secret=CANVAS_SECRET,
        auth="smart",
        auth_signing_key_file=key_file,
    )
    auth = AuthServer(settings, database)
    try:
        client = await register(database, ApiClient("payer"))
        _, answer = await auth.issue(client.token_form(TOKEN_URL))
        verified = jwt.decode(answer["access_token"], signing, algorithms=["ES384"])
        assert verified.header["kid"] == signing.kid
        caller = await auth.authenticate(answer["access_token"])
        assert caller.client_id == "payer" and caller.allows("Task", "d")
    finally:
        await auth.aclose()
