"""Authentication benchmark: what a bearer token costs a FHIR request, and token issuance.

Not a test. Runs the FHIR app in this process (httpx ASGI transport, SQLite in a temporary
folder, one core), with authentication off and with HERALD_AUTH=smart, and times --requests
`GET /fhir/Task/{id}` of one stored Task each way (best of --repeat rounds), then --tokens token
requests (a fresh ES384 client assertion each: verify it, record its jti, sign an access token).
Prints per-request times, the ratio smart/none, and tokens per second.

    .venv/bin/python bench/auth.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from herald.ingest.app import create_app
from herald.ingest.auth.server import AuthServer
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import clients
from herald.runtime.store.database import Database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the client side
from tests.support.smart import ALL_SCOPES, ApiClient

BASE = "http://herald.bench/fhir"
TASK = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"}


async def _ready() -> dict[str, bool]:
    return {"database": True}


async def _app(database: Database, smart: bool) -> tuple[httpx.AsyncClient, AuthServer | None]:
    settings = Settings(database_url="sqlite://", base_url=BASE, auth="smart" if smart else "none")
    auth = AuthServer(settings, database) if smart else None
    ctx = IngestContext(settings, database, load_topics(), Metrics(), auth=auth)
    transport = httpx.ASGITransport(app=create_app(ctx, _ready))
    return httpx.AsyncClient(transport=transport, base_url="http://herald.bench"), auth


async def _time_reads(http: httpx.AsyncClient, headers: dict[str, str], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        response = await http.get("/fhir/Task/t1", headers=headers)
        assert response.status_code == 200, response.text
    return (time.perf_counter() - started) / count


async def main(requests: int, repeat: int, tokens: int) -> None:
    """Run the benchmark and print its figures."""
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{Path(folder) / 'bench.db'}")
        await database.migrate()
        client = ApiClient("bench")
        async with database.transaction() as connection:
            await clients.add(connection, client.registration())
        plain, _ = await _app(database, smart=False)
        smart, auth = await _app(database, smart=True)
        assert (await plain.put("/fhir/Task/t1", json=TASK)).status_code in (200, 201)
        token_url = f"{BASE}/auth/token"
        answer = await smart.post("/fhir/auth/token", data=client.token_form(token_url))
        bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        best_none = best_smart = float("inf")
        for _ in range(repeat):
            best_none = min(best_none, await _time_reads(plain, {}, requests))
            best_smart = min(best_smart, await _time_reads(smart, bearer, requests))
        forms = [client.token_form(token_url, ALL_SCOPES) for _ in range(tokens)]
        started = time.perf_counter()
        for form in forms:
            assert (await smart.post("/fhir/auth/token", data=form)).status_code == 200
        per_token = (time.perf_counter() - started) / tokens
        print(f"GET /fhir/Task/{{id}}, auth none : {best_none * 1e3:7.3f} ms/request")
        print(f"GET /fhir/Task/{{id}}, auth smart: {best_smart * 1e3:7.3f} ms/request")
        print(f"ratio smart/none                : {best_smart / best_none:7.2f}")
        print(
            f"token endpoint                  : {per_token * 1e3:7.3f} ms/token "
            f"({1 / per_token:.0f} tokens/s)"
        )
        await plain.aclose()
        await smart.aclose()
        assert auth is not None
        await auth.aclose()
        await database.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.repeat, arguments.tokens))
