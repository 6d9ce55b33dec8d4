"""Herald as real OS processes, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.local_servers import ATTEMPTS
from tests.support.services import free_port
from tests.support.smart import (
    CANVAS_SECRET,
    ApiClient,
    SmartAuth,
    forget_auth,
    register,
    remember_auth,
)


def herald_env(**settings: str) -> dict[str, str]:
    """The process environment: the caller's, without any HERALD_* it had, plus these settings.

    Authentication is off unless the test asks for it (`auth="smart"`); `serving` then
    registers a client and `tests.support.smart.fhir_client` gets tokens for it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update({f"HERALD_{k.upper()}": v for k, v in settings.items()})
    env.setdefault("HERALD_LOG_FORMAT", "text")
    env.setdefault("HERALD_AUTH", "none")
    return env


T = TypeVar("T")


class PortTaken(AssertionError):
    """Herald exited because a port it was to listen on was taken (lost after it was picked)."""


def on_a_free_port(
    start: Callable[[int], T], pick: Callable[[], int] = free_port, attempts: int = ATTEMPTS
) -> T:
    """start(port) on a free port; again on a fresh one while it raises PortTaken."""
    for _ in range(attempts - 1):
        try:
            return start(pick())
        except PortTaken:
            continue
    return start(pick())


class HeraldProcess:
    """One `herald <role>` process; its output goes to a log file."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, ready_url: str) -> None:
        self.role = role
        self.ready_url = ready_url
        self.log_path = log_dir / f"herald-{role}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", role],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # closes its log
                log = self.log()
                # uvicorn's words for EADDRINUSE; the start may be retried on another port.
                lost = "address already in use" in log.lower()
                raise (PortTaken if lost else AssertionError)(f"herald {self.role} exited:\n{log}")
            try:
                if httpx.get(self.ready_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"herald {self.role} not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """What the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def with_smart_auth(env: dict[str, str], port: int) -> tuple[dict[str, str], Any]:
    """The environment of a FHIR-serving Herald with HERALD_AUTH=smart (admin port and Canvas
    secret filled in), and the httpx.Auth of a client registered with every scope."""
    env = dict(env)
    env.setdefault("HERALD_ADMIN_PORT", str(free_port()))
    env.setdefault("HERALD_CANVAS_SECRET", CANVAS_SECRET)
    client = ApiClient(f"test-{uuid.uuid4().hex[:8]}")
    register(env, client)
    base = env.get("HERALD_BASE_URL", f"http://127.0.0.1:{port}/fhir").rstrip("/")
    return env, SmartAuth(client, f"{base}/auth/token")


def ready_url(env: dict[str, str], port: int) -> str:
    """Where a FHIR-serving Herald answers /readyz: the admin port when authentication is on."""
    if env.get("HERALD_AUTH") == "smart":
        port = int(env["HERALD_ADMIN_PORT"])
    return f"http://127.0.0.1:{port}/readyz"


@contextmanager
def serving(role: str, env: dict[str, str], log_dir: Path, port: int) -> Iterator[str]:
    """A ready `herald <role>` serving HTTP on `port`; yields its root URL. On exit: SIGTERM, and
    the process must exit 0. With HERALD_AUTH=smart, a client with every scope is registered
    first and `tests.support.smart.fhir_client(url)` authenticates as it."""
    root = f"http://127.0.0.1:{port}"
    auth = None
    if env.get("HERALD_AUTH") == "smart" and role in ("run", "ingest"):
        env, auth = with_smart_auth(env, port)
    process = HeraldProcess(role, env, log_dir, ready_url(env, port))
    try:
        process.wait_ready()
        if auth is not None:
            remember_auth(root, auth)
        yield root
    finally:
        forget_auth(root)
        code = process.stop()
        assert code == 0, f"herald {role} exited with {code} on SIGTERM:\n{process.log()}"
