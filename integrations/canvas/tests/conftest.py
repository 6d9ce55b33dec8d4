"""A loopback HTTP receiver standing in for Herald, and an in-memory plugin cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET = "whsec_cGx1Z2luLXRlc3Qtc2VjcmV0LTMyLWJ5dGVzLWxvbmc="


@dataclass
class Herald:
    """Records the POSTs it gets; answers with `statuses` in turn (then 200)."""

    url: str = ""
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.posts]


@pytest.fixture
def herald() -> Iterator[Herald]:
    state = Herald()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.posts.append((self.path, dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class MemoryCache:
    """The subset of canvas_sdk.caching.base.Cache the plugin uses."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, timeout_seconds: int | None = None) -> None:
        self.values[key] = value


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch) -> MemoryCache:
    """get_cache() only works inside the plugin runner; tests use memory."""
    memory = MemoryCache()
    monkeypatch.setattr("herald_canvas.pending.get_cache", lambda: memory)
    return memory


@pytest.fixture
def secrets(herald: Herald) -> dict[str, str]:
    return {
        "HERALD_URL": herald.url,
        "HERALD_SECRET": SECRET,
        "CANVAS_INSTANCE": "acme-clinic",
        "RECONCILE_LOOKBACK_HOURS": "24",
        "RECONCILE_BATCH_SIZE": "200",
    }
