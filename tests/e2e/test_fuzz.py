"""Schema-driven fuzzing of the FHIR API: schemathesis against `herald run`, bounded in time.

It fails on any 5xx, on an answer the OpenAPI document does not describe (status, content type,
body), and on a server that stops answering. The endpoint policy is strict so that generated
subscriptions never reach anything on this machine; the rate limit is off so that the
generated requests reach the handlers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.herald import HeraldProcess, herald_env
from tests.support.services import free_port

pytestmark = pytest.mark.e2e

# Seconds of fuzzing; the run costs this plus Herald's start.
BUDGET = 30
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        rate_limit="0",
        allow_private_endpoints="false",
        allow_http_endpoints="false",
    )
    herald = HeraldProcess("run", env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    try:
        herald.wait_ready()
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                CHECKS,
                "--max-time",
                str(BUDGET),
                "--workers",
                "1",
                "--request-timeout",
                "10",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BUDGET + 60,
        )
        print(run.stdout[-3000:])  # the summary: cases run, failures, seed
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        assert herald.stop() == 0, herald.log()
    assert "unexpected error" not in herald.log(), herald.log()
