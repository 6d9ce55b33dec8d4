"""Throwaway servers of deploy/local/: a port lost before the bind means another port, and a failed
start leaves no run state behind."""

from __future__ import annotations

import socket

import pytest

from tests.support import local_servers
from tests.support.local_servers import (
    KAFKA,
    POSTGRES,
    Kind,
    StartFailed,
    free_port,
    local_dir,
    lost_port,
    picker,
)


def comes_up_elsewhere(kind: Kind) -> None:
    """Start `kind` with its first port taken just before the bind: it must come up on other
    ports, with no run state left of the failed attempt."""
    with lost_port() as taken:
        pick, picked = picker(taken)
        server = local_servers.start(kind, pick)
    try:
        assert len(picked) == 2 * len(kind.ports), "the start was not retried"
        port = int(server.env[kind.ports[0]])
        assert port != taken and str(port) in server.address
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert not (local_dir() / kind.state.format(taken)).exists()
    finally:
        local_servers.stop(server)
    assert not server.state.exists()


@pytest.mark.postgres
def test_postgres_comes_up_on_another_port_when_its_port_is_lost_before_the_bind() -> None:
    comes_up_elsewhere(POSTGRES)


@pytest.mark.kafka
def test_kafka_comes_up_on_other_ports_when_its_port_is_lost_before_the_bind() -> None:
    comes_up_elsewhere(KAFKA)


@pytest.mark.postgres
def test_a_port_taken_on_every_attempt_gives_up_with_a_clear_error() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        taken = int(listening.getsockname()[1])
        picked: list[int] = []

        def always_taken() -> int:
            picked.append(taken)
            return taken

        with pytest.raises(StartFailed, match="a port was taken on each of 3 attempts"):
            local_servers.start(POSTGRES, always_taken, attempts=3)
    assert len(picked) == 3
    assert not (local_dir() / f"pg-{taken}").exists()


@pytest.mark.kafka
def test_any_other_start_failure_is_reported_at_once_and_leaves_no_run_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_EXTRA_PROPERTIES", "num.partitions=not-a-number")
    pick, picked = picker(free_port())
    with pytest.raises(StartFailed, match=r"kafka.sh start failed \(exit 1\)"):
        local_servers.start(KAFKA, pick)
    assert len(picked) == len(KAFKA.ports), "a failure other than a taken port was retried"
    assert not (local_dir() / f"kafka-run-{picked[0]}").exists()
