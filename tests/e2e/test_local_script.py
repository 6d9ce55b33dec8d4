"""deploy/local/herald.sh: start fails loudly, stop needs no settings again, a role restarts."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.scenario import run_backbone
from tests.support.receiver import Receiver
from tests.support.services import REPO, free_port

SCRIPT = REPO / "deploy" / "local" / "herald.sh"
pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


def herald_sh(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the script with only the given variables on top of a clean environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(
        ["bash", str(SCRIPT), *command],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def local_dir(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Run state of the script in a folder of the test's own; stops whatever is left."""
    env = {"HERALD_LOCAL_DIR": str(tmp_path), "HERALD_BIN": str(REPO / ".venv/bin/herald")}
    yield env
    if (tmp_path / "herald-run" / "state.env").exists():
        herald_sh(["stop"], env)


def test_start_refuses_a_taken_port_and_starts_nothing(local_dir: dict[str, str]):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = herald_sh(
            ["start"],
            {**local_dir, "HERALD_PORT": str(free_port()), "DISPATCHER_HEALTH_PORT": str(port)},
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert result.stdout == ""
    assert not (Path(local_dir["HERALD_LOCAL_DIR"]) / "herald-run" / "ingest.pid").exists()


def test_start_status_restart_stop(
    local_dir: dict[str, str], kafka_bootstrap: str, postgres_url: str
):
    ports = {
        "HERALD_PORT": str(free_port()),
        "MATCHER_HEALTH_PORT": str(free_port()),
        "DISPATCHER_HEALTH_PORT": str(free_port()),
    }
    env = {
        **local_dir,
        **ports,
        "HERALD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HERALD_DATABASE_URL": postgres_url,
        "HERALD_KAFKA_TOPIC_PREFIX": f"herald-test-{uuid.uuid4().hex[:8]}.",
        "HERALD_HANDSHAKE_DELAY": "0.2",
    }
    started = herald_sh(["start"], env)
    assert started.returncode == 0, started.stderr
    base_url = f"http://127.0.0.1:{ports['HERALD_PORT']}/fhir"
    assert started.stdout.strip() == base_url
    for role, port in zip(("ingest", "matcher", "dispatcher"), ports.values(), strict=True):
        assert f"{role} started" in started.stderr and f"port {port}," in started.stderr

    # No settings repeated from here on: the script recorded them.
    status = herald_sh(["status"], local_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "matcher ready" in status.stdout and "kafka external" in status.stdout

    with Receiver() as receiver:
        run_backbone(base_url, receiver)

    run_dir = Path(local_dir["HERALD_LOCAL_DIR"]) / "herald-run"
    pids = {role: (run_dir / f"{role}.pid").read_text() for role in ("ingest", "dispatcher")}
    restarted = herald_sh(["restart", "dispatcher"], local_dir)
    assert restarted.returncode == 0, restarted.stderr
    assert "dispatcher ready" in restarted.stderr
    assert (run_dir / "dispatcher.pid").read_text() != pids["dispatcher"]
    assert (run_dir / "ingest.pid").read_text() == pids["ingest"]  # the others keep running
    assert "dispatcher ready" in herald_sh(["status"], local_dir).stdout
    log = (run_dir / "dispatcher.log").read_text()
    assert log.count("herald dispatcher starting") == 2  # appended, not truncated
    # The restarted role runs with the settings of `start` (the topic prefix above among them),
    # so it consumes what its peers produce: a new subscription is served as before.
    with Receiver() as receiver:
        run_backbone(base_url, receiver)
    assert (run_dir / "state.env").stat().st_mode & 0o777 == 0o600  # it holds the settings

    stopped = herald_sh(["stop"], local_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert herald_sh(["status"], local_dir).returncode == 1  # nothing recorded any more
