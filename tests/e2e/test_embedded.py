"""`herald run`: everything in one process on SQLite, as a user first meets Herald."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.scenario import run_backbone, run_bad_input
from tests.support.herald import HeraldProcess, herald_env
from tests.support.receiver import Receiver
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """A `herald run` process; yields its FHIR base URL."""
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}", port=str(port), handshake_delay="0.2"
    )
    process = HeraldProcess("run", env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    try:
        process.wait_ready()
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        code = process.stop()
        assert code == 0, f"herald run exited with {code} on SIGTERM:\n{process.log()}"


def test_backbone_embedded(embedded: str) -> None:
    with Receiver() as receiver:
        run_backbone(embedded, receiver)


def test_bad_input_embedded(embedded: str) -> None:
    run_bad_input(embedded)
