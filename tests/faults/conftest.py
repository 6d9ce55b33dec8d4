"""Fixtures of the fault-injection tests: Herald's processes and a subscriber per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, Embedded, Processes, Subscriber

StartCluster = Callable[..., Cluster]
StartEmbedded = Callable[..., Embedded]


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    """A loopback subscriber endpoint."""
    with Subscriber() as s:
        yield s


def _stop_all(started: list[Processes]) -> None:
    """SIGTERM what is still running; each process is expected to exit 0 (a drain after the
    faults)."""
    stopped = [(processes, processes.stop()) for processes in started]
    for processes, codes in stopped:
        assert all(code == 0 for code in codes.values()), (codes, processes.logs())


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """Start ingest, matcher and dispatcher on the given Kafka and database; stopped at the end."""
    clusters: list[Processes] = []

    def start(kafka: str, database: str, **settings: str) -> Cluster:
        cluster = Cluster(kafka, database, tmp_path / f"cluster-{len(clusters)}", **settings)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    _stop_all(clusters)


@pytest.fixture
def start_embedded(tmp_path: Path) -> Iterator[StartEmbedded]:
    """Start `herald run` on a fresh SQLite file with extra HERALD_* settings; stopped at the
    end."""
    started: list[Processes] = []

    def start(**settings: str) -> Embedded:
        folder = tmp_path / f"embedded-{len(started)}"
        herald = Embedded(folder / "herald.db", folder, **settings)
        started.append(herald)
        herald.start()
        return herald

    yield start
    _stop_all(started)
