"""Starting `herald run` for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.herald import (
    HeraldProcess,
    herald_env,
    on_a_free_port,
    ready_url,
    with_smart_auth,
)
from tests.support.services import free_port

StartHerald = Callable[..., httpx.Client]


@pytest.fixture
def start_herald(tmp_path: Path) -> Iterator[StartHerald]:
    """Start `herald run` on SQLite with extra HERALD_* settings; yields a client of its /fhir
    (authenticated as a client with every scope when the settings say auth="smart")."""
    started: list[tuple[HeraldProcess, httpx.Client]] = []

    def start(**settings: str) -> httpx.Client:
        def on(port: int) -> tuple[HeraldProcess, httpx.Client]:
            env = herald_env(
                database_url=f"sqlite:///{tmp_path / f'herald-{len(started)}-{port}.db'}",
                port=str(port),
                handshake_delay="0.1",
                **settings,
            )
            auth = None
            if env["HERALD_AUTH"] == "smart":
                env, auth = with_smart_auth(env, port)
            process = HeraldProcess("run", env, tmp_path, ready_url(env, port))
            process.wait_ready()
            base_url = f"http://127.0.0.1:{port}/fhir"
            return process, httpx.Client(base_url=base_url, timeout=10, auth=auth)

        process, client = on_a_free_port(on)
        started.append((process, client))
        return client

    yield start
    for process, client in started:
        client.close()
        assert process.stop() == 0, process.log()


HERALD = f"{sys.executable} -m herald.cli"


@dataclass
class Running:
    """`herald run` and `herald receive`, on ports of their own."""

    port: int
    receiver_port: int
    env: dict[str, str]
    receiver_log: Path

    def received(self) -> str:
        """What `herald receive` printed so far."""
        return self.receiver_log.read_text()

    def shell(self, script: str) -> str:
        """Run a shell snippet of the docs with the ports and commands of this run."""
        script = (
            script.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
            .replace("127.0.0.1:9000", f"127.0.0.1:{self.receiver_port}")
            .replace(".venv/bin/herald", HERALD)
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Herald and the receiver, as `make run` and `herald receive` start them (one pair per
    test module: each test makes subscriptions and Tasks of its own)."""
    tmp_path = tmp_path_factory.mktemp("running")

    def herald_on(port: int) -> tuple[dict[str, str], HeraldProcess]:
        env = herald_env(
            database_url=f"sqlite:///{tmp_path / f'herald-{port}.db'}",
            port=str(port),
            # Quick to fail, for the operator commands' tests; the docs' flows never fail.
            handshake_attempts="1",
            retry_delays="0.2",
        )
        herald = HeraldProcess("run", env, tmp_path, f"http://127.0.0.1:{port}/readyz")
        herald.wait_ready()
        return env, herald

    env, herald = on_a_free_port(herald_on)
    port, receiver_port = int(env["HERALD_PORT"]), free_port()
    log = tmp_path / "receive.log"
    with log.open("wb") as out:
        receiver = subprocess.Popen(
            [*HERALD.split(), "receive", "--port", str(receiver_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(lambda: "listening on" in log.read_text(), "herald receive to listen")
        yield Running(port, receiver_port, env, log)
    finally:
        receiver.terminate()
        assert receiver.wait(30) == 0, log.read_text()
        assert herald.stop() == 0, herald.log()


def wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until condition() holds, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
