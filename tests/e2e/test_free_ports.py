"""A Herald process whose port is taken between the pick and its bind is started again on
another port; any other failure to start is reported at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.herald import HeraldProcess, PortTaken, herald_env, on_a_free_port
from tests.support.local_servers import free_port, lost_port, picker

pytestmark = pytest.mark.e2e


def herald(tmp_path: Path, port: int, **settings: str) -> HeraldProcess:
    """`herald run` on SQLite and `port`, ready (or raising why not)."""
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / f'herald-{port}.db'}", port=str(port), **settings
    )
    process = HeraldProcess("run", env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    process.wait_ready()
    return process


def test_herald_comes_up_on_another_port_when_its_port_is_lost_before_the_bind(
    tmp_path: Path,
) -> None:
    with lost_port() as taken:
        pick, picked = picker(taken)
        port, running = on_a_free_port(lambda port: (port, herald(tmp_path, port)), pick)
    try:
        assert picked == [taken, port] and port != taken
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        assert running.stop() == 0, running.log()


def test_any_other_failure_to_start_is_not_retried(tmp_path: Path) -> None:
    pick, picked = picker(free_port())
    with pytest.raises(AssertionError, match="herald run exited") as failed:
        on_a_free_port(lambda port: herald(tmp_path, port, log_format="nonsense"), pick)
    assert not isinstance(failed.value, PortTaken)
    assert len(picked) == 1
