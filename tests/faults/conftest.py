"""Fixtures of the fault-injection tests: a Herald cluster and a subscriber per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, Subscriber

StartCluster = Callable[..., Cluster]


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    """A loopback subscriber endpoint."""
    with Subscriber() as s:
        yield s


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """Start ingest, matcher and dispatcher on the given Kafka and database; stopped at the end
    with SIGTERM, each expected to exit 0 (a drain after the faults)."""
    clusters: list[Cluster] = []

    def start(kafka: str, database: str, **settings: str) -> Cluster:
        cluster = Cluster(kafka, database, tmp_path / f"cluster-{len(clusters)}", **settings)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        codes = cluster.stop()
        assert all(code == 0 for code in codes.values()), (codes, cluster.logs())
