"""Starting `herald run` for end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.herald import HeraldProcess, herald_env, ready_url, with_smart_auth
from tests.support.services import free_port

StartHerald = Callable[..., httpx.Client]


@pytest.fixture
def start_herald(tmp_path: Path) -> Iterator[StartHerald]:
    """Start `herald run` on SQLite with extra HERALD_* settings; yields a client of its /fhir
    (authenticated as a client with every scope when the settings say auth="smart")."""
    started: list[tuple[HeraldProcess, httpx.Client]] = []

    def start(**settings: str) -> httpx.Client:
        port = free_port()
        env = herald_env(
            database_url=f"sqlite:///{tmp_path / f'herald-{len(started)}.db'}",
            port=str(port),
            handshake_delay="0.1",
            **settings,
        )
        auth = None
        if env["HERALD_AUTH"] == "smart":
            env, auth = with_smart_auth(env, port)
        process = HeraldProcess("run", env, tmp_path, ready_url(env, port))
        process.wait_ready()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir", timeout=10, auth=auth)
        started.append((process, client))
        return client

    yield start
    for process, client in started:
        client.close()
        assert process.stop() == 0, process.log()
