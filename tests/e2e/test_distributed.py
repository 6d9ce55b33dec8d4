"""ingest, matcher and dispatcher as three OS processes on real Kafka and real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.scenario import run_backbone, run_bad_input
from tests.support.herald import HeraldProcess, herald_env, ready_url, with_smart_auth
from tests.support.receiver import Receiver
from tests.support.services import free_port
from tests.support.smart import forget_auth, remember_auth

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
def distributed(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """Three Herald processes; yields the FHIR base URL of ingest."""
    port, matcher_port, dispatcher_port = free_port(), free_port(), free_port()
    common = {
        "kafka_bootstrap": kafka_bootstrap,
        "kafka_topic_prefix": f"herald-test-{uuid.uuid4().hex[:8]}.",
        "database_url": postgres_url,
        "allow_http_endpoints": "true",
        "allow_private_endpoints": "true",
        "handshake_delay": "0.2",
        "base_url": f"http://127.0.0.1:{port}/fhir",
    }
    ingest_env, auth = with_smart_auth(herald_env(**common, port=str(port), auth="smart"), port)
    processes = [
        HeraldProcess("ingest", ingest_env, tmp_path, ready_url(ingest_env, port)),
        HeraldProcess(
            "matcher",
            herald_env(**common, health_port=str(matcher_port)),
            tmp_path,
            f"http://127.0.0.1:{matcher_port}/readyz",
        ),
        HeraldProcess(
            "dispatcher",
            herald_env(**common, health_port=str(dispatcher_port)),
            tmp_path,
            f"http://127.0.0.1:{dispatcher_port}/readyz",
        ),
    ]
    try:
        for process in processes:
            process.wait_ready()
        remember_auth(f"http://127.0.0.1:{port}", auth)
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        forget_auth(f"http://127.0.0.1:{port}")
        codes = {p.role: p.stop() for p in processes}
        assert all(code == 0 for code in codes.values()), (
            codes,
            "\n".join(p.log() for p in processes),
        )


def test_backbone_distributed(distributed: str) -> None:
    with Receiver() as receiver:
        run_backbone(distributed, receiver)


def test_bad_input_distributed(distributed: str) -> None:
    run_bad_input(distributed)
