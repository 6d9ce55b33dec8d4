"""`herald run`: everything in one process on SQLite, as a user first meets Herald."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.scenario import run_backbone, run_bad_input
from tests.support.herald import herald_env, serving
from tests.support.receiver import Receiver
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """A `herald run` process with authentication on; yields its FHIR base URL."""
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        handshake_delay="0.2",
        auth="smart",
    )
    with serving("run", env, tmp_path, port) as root:
        yield f"{root}/fhir"


def test_backbone_embedded(embedded: str) -> None:
    with Receiver() as receiver:
        run_backbone(embedded, receiver)


def test_bad_input_embedded(embedded: str) -> None:
    run_bad_input(embedded)
