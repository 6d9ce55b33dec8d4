"""Ingest benchmark: CPU per `PUT /fhir/Task/{id}` of the FHIR API process against a bare write.

Not a test. Each round starts, one after the other and fresh:

- **floor**: bench/e2e.py's minimal FastAPI + orjson + one SQLite insert PUT endpoint (uvicorn,
  stock asyncio loop, h11), the same process bench/e2e.py measures;
- **ingest, auth none** and **ingest, auth smart**: Herald's FHIR API alone, in a process of its
  own, put together as `herald run` and `herald ingest` put it together (the same app,
  middlewares, uvicorn settings, uvloop and logging), on a SQLite file, without the outbox relay,
  the matcher and the dispatcher: what is measured is the request path and the write. With
  smart, every request carries a bearer token of a registered client (ES384 assertion, token
  from Herald's own token endpoint);
- **path, auth none** and **path, auth smart** (`--store path`): the same process with
  `writes.write_version` replaced by a stamp in memory (no transaction, no SQL): the CPU of the
  request path alone — middlewares, routing, dependencies, body parsing, validation, response.

The load is bench/e2e.py's: W keep-alive connections PUT N new Tasks (closed loop), after a
warm-up of 200 PUTs. Printed per system: CPU ms per request (user + system of the server process
from /proc), accepted writes/s, and each Herald variant's CPU ÷ the floor's, measured in the same
round; then the medians over the rounds. `--baseline DIR` measures another checkout's Herald
(e.g. the commit before a change) right after each variant, in the same rounds. The server logs
at HERALD_LOG_LEVEL (--log-level, default INFO as Herald's default: one access and one audit
line per request, JSON) into a file.

    .venv/bin/python bench/ingest.py --rounds 3 --json bench-ingest.json
    .venv/bin/python bench/ingest.py --database postgres --auth none --store full
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from e2e import (
    REPO,
    System,
    _answers,
    _tasks,
    _wait_until,
    closed_loop,
    floor_system,
    measure,
    pids_matching,
)

from herald.runtime.store import clients
from herald.runtime.store.database import Database
from tests.support.services import create_database, free_port
from tests.support.smart import CANVAS_SECRET, ApiClient

WARM_UP = 200


async def _write_in_memory(
    ctx: Any, resource_type: str, resource_id: str, plan: Any, **_: Any
) -> Any:
    """writes.write_version without the database, for new resources: the plan, then the stamp."""
    from herald.core.fhir import format_instant, utc_now
    from herald.core.resources import with_version
    from herald.ingest.writes import WriteResult

    stamped = with_version(plan(None), resource_id, 1, format_instant(utc_now()))
    return WriteResult(stamped, "create")


async def _serve(smart: bool, path_only: bool) -> None:
    """The FHIR API of `herald run`/`herald ingest` without the relay (settings from HERALD_*);
    `path_only`: with writes.write_version replaced by `_write_in_memory`."""
    from herald.ingest import writes
    from herald.ingest.auth.server import AuthServer
    from herald.processes import _ingest, open_parts
    from herald.runtime.lifecycle import run_components
    from herald.runtime.settings import Settings

    if path_only:
        writes.write_version = _write_in_memory
    settings = Settings()
    async with open_parts(settings) as parts:
        auth = AuthServer(settings, parts.database) if smart else None
        # The first component serves the API (on SQLite after draining leftover outbox rows);
        # the relay, when there is one, is left out.
        try:
            await run_components(_ingest(parts, auth)[:1])
        finally:
            if auth is not None:
                await auth.aclose()


def _serve_main(smart: bool, path_only: bool) -> None:
    from herald.runtime.lifecycle import run
    from herald.runtime.logs import configure
    from herald.runtime.settings import Settings

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    run(_serve(smart, path_only))


async def _register(url: str, client: ApiClient) -> None:
    database = Database(url)
    try:
        await database.migrate()
        async with database.transaction() as connection:
            await clients.add(connection, client.registration())
    finally:
        await database.aclose()


def baseline_path(checkout: Path, folder: Path) -> Path:
    """A folder to put first on PYTHONPATH so that `herald` is another checkout's (as the
    package is laid out: services/ is herald, schemas/ is herald.schemas)."""
    shutil.copytree(checkout / "services", folder / "herald")
    shutil.copytree(checkout / "schemas", folder / "herald" / "schemas")
    return folder


@dataclass(frozen=True)
class Postgres:
    """The PostgreSQL server of `--database postgres`: its URL and its process tree's roots."""

    url: str
    roots: list[int]


COUNTERS = (
    "herald_database_statements_total",
    "herald_database_transactions_total",
    "herald_database_round_trips_total",
)


def _counters(url: str) -> dict[str, float]:
    from tests.faults.harness import metric

    text = httpx.get(url, timeout=30).text
    return {name: metric(text, name) for name in COUNTERS}


@contextlib.contextmanager
def ingest_system(
    folder: Path,
    smart: bool,
    path_only: bool,
    log_level: str,
    baseline: Path | None = None,
    postgres: Postgres | None = None,
) -> Iterator[tuple[System, bytes, Callable[[], dict[str, float]]]]:
    """Herald's FHIR API in its own process; with the header lines each request must carry
    (`baseline`: a PYTHONPATH folder holding another version of Herald to run instead;
    `postgres`: the store on that server, in a fresh database)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database_url = f"sqlite:///{folder / 'herald.db'}"
    if postgres is not None:
        database_url = asyncio.run(create_database(postgres.url, f"bench_{uuid.uuid4().hex[:8]}"))
    client = ApiClient("bench")
    if smart:
        asyncio.run(_register(database_url, client))
    env = os.environ | {
        "HERALD_DATABASE_URL": database_url,
        "HERALD_PORT": str(port),
        "HERALD_AUTH": "smart" if smart else "none",
        "HERALD_LOG_LEVEL": log_level,
        "HERALD_LOG_FORMAT": "json",
        "HERALD_CANVAS_SECRET": CANVAS_SECRET,
        "HERALD_HEALTH_PORT": str(free_port()),
        # One client on one address: limited (the limiter's work is measured), never refused.
        "HERALD_RATE_LIMIT": "1000000",
    }
    if baseline is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(baseline), env.get("PYTHONPATH", "")])
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "_serve", "smart" if smart else "none", str(path_only)],
            stdin=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=REPO,
        )
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        _wait_until(lambda: _answers(f"{base}/metadata"), 60, "ingest")
        headers = b""
        if smart:
            form = client.token_form(f"{base}/auth/token")
            answer = httpx.post(f"{base}/auth/token", data=form, timeout=30)
            answer.raise_for_status()
            headers = b"Authorization: Bearer %s\r\n" % answer.json()["access_token"].encode()
        name = f"{'path' if path_only else 'ingest'} auth {'smart' if smart else 'none'}"
        name += " (baseline)" if baseline is not None else ""
        backing = [] if postgres is None else postgres.roots
        parts = {} if postgres is None else {"ingest": [process.pid], "postgres": backing}
        metrics = f"http://127.0.0.1:{port}/metrics"
        counted = postgres is not None and not smart
        counters = (lambda: _counters(metrics)) if counted else dict
        system = System(name, port, lambda: [process.pid, *backing], parts=lambda: parts)
        yield system, headers, counters
    finally:
        process.terminate()
        process.wait()


def _measure(
    system: System,
    headers: bytes,
    args: argparse.Namespace,
    tag: str,
    counters: Callable[[], dict[str, float]] = dict,
) -> dict[str, Any]:
    owners = [f"Organization/o{k}" for k in range(100)]
    warm = _tasks(f"warm-{tag}", WARM_UP, owners)
    asyncio.run(closed_loop(system.port, warm, args.writers, headers))
    tasks = _tasks(tag, args.requests, owners)
    before = counters()
    result = measure(
        system, None, tasks, lambda t: closed_loop(system.port, t, args.writers, headers)
    )
    if result["failed"]:
        raise RuntimeError(f"{system.name}: {result['failed']} PUTs were refused")
    after = counters()
    for name, value in after.items():  # PostgreSQL (auth none): Herald's counters
        per = name.removeprefix("herald_database_").removesuffix("_total")
        result[f"{per}_per_request"] = round((value - before[name]) / len(tasks), 2)
    return result


def run_round(
    args: argparse.Namespace, number: int, postgres: Postgres | None = None
) -> dict[str, dict[str, Any]]:
    """One round: the floor, then each auth mode asked for, each on a fresh server."""
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        with floor_system(Path(folder)) as floor:
            figures["floor"] = _measure(floor, b"", args, f"floor{number}")
        variants = [
            (smart, path_only)
            for path_only in {"full": [False], "path": [True], "both": [False, True]}[args.store]
            for smart in {"none": [False], "smart": [True], "both": [False, True]}[args.auth]
        ]
        baseline: Path | None = None
        if args.baseline is not None:
            baseline = baseline_path(args.baseline, Path(folder) / "baseline")
        versions = [None] if baseline is None else [None, baseline]
        for (smart, path_only), other in itertools.product(variants, versions):
            place = Path(folder) / f"{smart}-{path_only}-{other is not None}"
            made = ingest_system(place, smart, path_only, args.log_level, other, postgres)
            with made as (system, head, counters):
                result = _measure(system, head, args, f"r{number}", counters)
                result["floor_ratio"] = round(
                    result["cpu_ms_per_task"] / figures["floor"]["cpu_ms_per_task"], 2
                )
                figures[system.name] = result
    return figures


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_serve":
        _serve_main(sys.argv[2] == "smart", sys.argv[3] == "True")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="PUTs per system and round")
    parser.add_argument("--writers", type=int, default=16, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, fresh servers")
    parser.add_argument("--auth", choices=("none", "smart", "both"), default="both")
    parser.add_argument(
        "--store",
        choices=("full", "path", "both"),
        default="both",
        help="full: real writes; path: the store replaced by a dict (the request path alone)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another commit (git worktree add DIR COMMIT): its Herald is measured "
        "too, right after this one's, in every round",
    )
    parser.add_argument("--log-level", default="INFO", help="HERALD_LOG_LEVEL of the server")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the store: a SQLite file, or a PostgreSQL server of its own (deploy/local)",
    )
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        postgres = None
        if args.database == "postgres":
            from tests.faults.harness import own_postgres

            server = stack.enter_context(own_postgres())
            postgres = Postgres(server["address"], pids_matching(f"pg-{server['PG_PORT']}"))
        rounds = [_round(args, number, postgres) for number in range(1, args.rounds + 1)]
    keys: tuple[str, ...] = ("cpu_ms_per_task", "floor_ratio", "accepted_writes_per_second")
    keys += tuple(f"{n}_per_request" for n in ("statements", "transactions", "round_trips"))
    median: dict[str, dict[str, float]] = {
        name: {
            key: round(statistics.median(r[name][key] for r in rounds), 3)
            for key in keys
            if key in rounds[0][name]
        }
        for name in rounds[0]
    }
    print(f"median of {args.rounds} rounds:")
    for name, f in median.items():
        print(f"  {name:<17} " + ", ".join(f"{k} {v}" for k, v in f.items()))
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}
        args.json.write_text(json.dumps(payload | {"median": median}, indent=2) + "\n")


def _round(
    args: argparse.Namespace, number: int, postgres: Postgres | None
) -> dict[str, dict[str, Any]]:
    """Run and print one round."""
    figures = run_round(args, number, postgres)
    print(f"round {number}:", flush=True)
    for name, f in figures.items():
        ratio = f" ({f['floor_ratio']:.2f}x floor)" if "floor_ratio" in f else ""
        line = (
            f"  {name:<17} {f['cpu_ms_per_task']:6.3f} ms CPU/request{ratio:<15} "
            f"{f['accepted_writes_per_second']:7.1f} writes/s"
        )
        if "cpu_ms_per_task_by_part" in f:
            line += ", by part " + ", ".join(
                f"{k} {v:.2f}" for k, v in f["cpu_ms_per_task_by_part"].items()
            )
        if "round_trips_per_request" in f:
            line += (
                f"; per request {f['statements_per_request']} statements, "
                f"{f['transactions_per_request']} transactions, "
                f"{f['round_trips_per_request']} asyncpg round trips"
            )
        print(line, flush=True)
    return figures


if __name__ == "__main__":
    main()
