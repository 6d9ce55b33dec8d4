"""`herald clients …`, `herald keys rotate` and the authentication checks at start, as an
operator runs them (the command in this process, Herald as an OS process beside it)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from herald import cli
from herald.cli import clients as clients_command
from herald.cli import receive, serve
from herald.core.notifications import HEARTBEAT, SubscriptionState, notification_bundle
from herald.receiver.app import Receiver as AppReceiver
from tests.e2e.scenario import HREX_TOPIC, put, subscription, task
from tests.support.herald import herald_env, serving
from tests.support.receiver import Receiver
from tests.support.services import free_port
from tests.support.smart import CANVAS_SECRET, ApiClient, SmartAuth, fhir_client

pytestmark = pytest.mark.e2e

Command = Callable[..., tuple[int, str, str]]


@pytest.fixture
def herald(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Command:
    """`herald …` with an environment: (exit code, stdout, stderr)."""
    # The command configures the root logger at start; the test runner's handlers stay.
    monkeypatch.setattr(serve, "configure", lambda *_: None)
    monkeypatch.setattr(clients_command, "configure", lambda *_: None)

    def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        with monkeypatch.context() as scoped:
            for name in [n for n in list(os.environ) if n.startswith("HERALD_")]:
                scoped.delenv(name)
            for name, value in env.items():
                if name.startswith("HERALD_"):
                    scoped.setenv(name, value)
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:
                code = int(exit_.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _kid(authorization: str) -> str:
    """The key id in the header of a bearer token (an Authorization header's value)."""
    header = authorization.removeprefix("Bearer ").split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "==="))["kid"])


def _token(client: ApiClient, token_url: str) -> str:
    answer = httpx.post(token_url, data=client.token_form(token_url))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_clients_are_added_listed_and_removed_while_herald_runs(
    tmp_path: Path, herald: Command
) -> None:
    run = herald
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        auth="smart",
        admin_port=str(free_port()),
        canvas_secret=CANVAS_SECRET,
    )
    client = ApiClient("payer-1")
    jwks = str(client.write_jwks(tmp_path))
    add = ["clients", "add", "payer-1", "--jwks", jwks, "--scope"]
    add += ["system/Task.read system/Subscription.*", "--organization", "Organization/p1"]
    add += ["--organization", "Organization/p2"]

    def listed() -> list[dict[str, object]]:
        # serving() registered a client of its own, named test-….
        lines = run(env, "clients", "list")[1].splitlines()
        return [c for c in map(json.loads, lines) if not str(c["id"]).startswith("test-")]

    with serving("run", env, tmp_path, port) as root:
        assert run(env, *add)[0] == 0
        payer = listed()
        assert payer == [
            {
                "id": "payer-1",
                "scope": "system/Subscription.cruds system/Task.rs",
                "organizations": ["Organization/p1", "Organization/p2"],
                "keys": "inline JWK set",
                "created": payer[0]["created"],
            }
        ]
        token_url = f"{root}/fhir/auth/token"
        with httpx.Client(base_url=f"{root}/fhir", auth=SmartAuth(client, token_url)) as http:
            first = http.get("/Task")
            assert first.status_code == 200
            # A new signing key: tokens signed with the old one still verify, new ones too.
            assert run(env, "keys", "rotate")[0] == 0
            assert http.get("/Task").status_code == 200
        with httpx.Client(base_url=f"{root}/fhir", auth=SmartAuth(client, token_url)) as http:
            assert http.get("/Task").status_code == 200
        # Herald signs with the new key once it reloads its keys (within 30 s); the token signed
        # with the old key keeps verifying.
        signed_before = first.request.headers["Authorization"]
        deadline = time.monotonic() + 45
        while _kid(fresh := f"Bearer {_token(client, token_url)}") == _kid(signed_before):
            assert time.monotonic() < deadline, "new tokens are still signed with the old key"
            time.sleep(1)
        for bearer in (fresh, signed_before):
            answer = httpx.get(f"{root}/fhir/Task", headers={"Authorization": bearer})
            assert answer.status_code == 200, answer.text
        code, _, err = run(env, *add)
        assert code == 2 and "registered already" in err
        assert run(env, "clients", "remove", "payer-1")[0] == 0
        assert listed() == []
        code, _, err = run(env, "clients", "remove", "payer-1")
        assert code == 2 and "not registered" in err
        # Herald learns of the removal within its client cache's 5 seconds.
        deadline = time.monotonic() + 15
        while (answer := httpx.post(token_url, data=client.token_form(token_url))).is_success:
            assert time.monotonic() < deadline, "the removed client still gets tokens"
            time.sleep(0.5)
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def test_clients_add_refuses_what_cannot_work(tmp_path: Path, herald: Command) -> None:
    run = herald
    env = herald_env(database_url=f"sqlite:///{tmp_path / 'herald.db'}")
    client = ApiClient("x")
    public = ["--jwks", str(client.write_jwks(tmp_path))]
    private_file = tmp_path / "private.json"
    private_file.write_text(json.dumps({"keys": [client.key.as_dict(private=True)]}))
    private = ["--jwks", str(private_file)]
    for arguments, complaint in [
        ([*public, "--scope", "system/Patient.read"], "Herald serves"),
        ([*public, "--scope", "system/Task.sr"], "in that order"),
        ([*public, "--scope", "openid"], "not a SMART system scope"),
        ([*public, "--scope", "system/Task.rs", "--organization", "Practitioner/1"], "<id>"),
        ([*public, "--scope", "system/Task.rs", "--organization", "Organization/1\n"], "<id>"),
        ([*private, "--scope", "system/Task.rs"], "private key"),
        (["--jwks-url", "ftp://example.org/jwks", "--scope", "system/Task.rs"], "http(s)"),
    ]:
        code, _, err = run(env, "clients", "add", "x", *arguments)
        assert code == 2, (arguments, err)
        assert complaint in err and len(err.strip().splitlines()) == 1, err
    # None of the refused clients was registered.
    assert run(env, "clients", "list")[:2] == (0, "")


def test_authentication_settings_are_checked_at_start(tmp_path: Path, herald: Command) -> None:
    run = herald
    env = herald_env(database_url=f"sqlite:///{tmp_path / 'herald.db'}", auth="smart")
    code, _, err = run(env, "run")
    assert code == 2 and "HERALD_CANVAS_SECRET" in err
    code, _, err = run({**env, "HERALD_CANVAS_SECRET": "plain-secret"}, "run")
    assert code == 2 and "whsec_" in err
    # `herald ingest` defaults to smart: without the Canvas secret it does not start either.
    del env["HERALD_AUTH"]
    code, _, err = run({**env, "HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "ingest")
    assert code == 2 and "HERALD_AUTH=smart" in err


async def _recover(receiver: AppReceiver, subscription_id: str, base: str) -> None:
    # A heartbeat saying the subscription is at #2 makes a new receiver fetch #1..#2.
    heartbeat = notification_bundle(
        base,
        SubscriptionState(subscription_id, HREX_TOPIC, "active", 2),
        HEARTBEAT,
        timestamp="2026-01-01T00:00:00Z",
    )
    try:
        await receiver.take(orjson.dumps(heartbeat), "application/fhir+json", None)
    finally:
        await receiver.aclose()


def test_herald_receive_reads_missed_events_with_the_subscribers_own_token(
    tmp_path: Path, herald: Command
) -> None:
    run = herald
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        auth="smart",
        allow_http_endpoints="true",
        allow_private_endpoints="true",
    )
    payer = ApiClient("payer-r")
    key_file = tmp_path / "payer-key.json"
    key_file.write_bytes(orjson.dumps(payer.key.as_dict(private=True)))
    jwks = str(payer.write_jwks(tmp_path))

    def receive_options(*options: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        receive.register(parser.add_subparsers())
        return parser.parse_args(["receive", *options])

    with serving("run", env, tmp_path, port) as root, Receiver() as endpoint:
        base = f"{root}/fhir"
        add = ["clients", "add", "payer-r", "--jwks", jwks, "--scope", "system/Subscription.cruds"]
        assert run(env, *add)[0] == 0
        with httpx.Client(base_url=base, auth=SmartAuth(payer, f"{base}/auth/token")) as http:
            created = http.post(
                "/Subscription", json=subscription(endpoint.url, "Organization/r", "t")
            )
            assert created.status_code == 201, created.text
        with fhir_client(base) as writer:
            for n in (1, 2):
                assert put(writer, task(f"r{n}", "Organization/r")).status_code == 201
        endpoint.wait_for(lambda r: r.events() == 2)

        options = ["--client-id", "payer-r", "--key", str(key_file), "--base", base]
        lines: list[str] = []
        client = httpx.AsyncClient(auth=receive._auth(receive_options(*options)))
        sid = created.json()["id"]
        asyncio.run(_recover(AppReceiver(lines.append, base=base, client=client), sid, base))
        assert [line.split(" ", 1)[1] for line in lines[1:]] == [
            "  recovered #1 Task/r1 create",
            "  recovered #2 Task/r2 create",
        ]
        # Without a token, $events is refused and the receiver says so.
        lines.clear()
        asyncio.run(_recover(AppReceiver(lines.append, base=base), sid, base))
        assert "could not fetch #1..#2" in lines[1] and "401" in lines[1]

    # The options go together, and a public key is not a client key.
    assert run(env, "receive", "--client-id", "payer-r", "--key", str(key_file))[0] == 2
    public = tmp_path / "payer-public.json"
    public.write_bytes(orjson.dumps(payer.key.as_dict(private=False)))
    code, _, err = run(env, "receive", *options[:3], str(public), "--base", base)
    assert code == 2 and "no private RSA or EC key" in err
