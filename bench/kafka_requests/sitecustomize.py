"""Benchmark instrumentation, not part of Herald: counts a process's Kafka requests by type.

`bench/e2e.py` puts this folder on the PYTHONPATH of the distributed services it starts and
names a folder in BENCH_KAFKA_REQUESTS; on SIGUSR1 a process writes its counts so far (aiokafka
requests sent, by API: Produce, Fetch, OffsetCommit, Heartbeat, Metadata...) to
`<folder>/<pid>.json`. One dictionary increment per request.
"""

from __future__ import annotations

import os

FOLDER = os.environ.get("BENCH_KAFKA_REQUESTS")


def _install(folder: str) -> None:
    import collections
    import json
    import signal
    from pathlib import Path
    from typing import Any

    try:
        from aiokafka import conn
    except ImportError:
        return
    counts: collections.Counter[str] = collections.Counter()
    send = conn.AIOKafkaConnection.send

    def counted(self: Any, request: Any, expect_response: bool = True) -> Any:
        counts[type(request).__name__.split("Request")[0]] += 1
        return send(self, request, expect_response)

    def dump(*_: object) -> None:
        path = Path(folder) / f"{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(counts))
        path.with_suffix(".tmp").rename(path)

    conn.AIOKafkaConnection.send = counted
    signal.signal(signal.SIGUSR1, dump)


if FOLDER:
    _install(FOLDER)
