"""retry_until_done retries passing outages only; anything else surfaces at once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    ProducerClosed,
)
from sqlalchemy import exc as sa

from herald.core.errors import ConcurrentWrite, ContractError, InvalidResource
from herald.runtime.lifecycle import retry_until_done
from herald.runtime.retriable import is_retriable

PASSING: list[BaseException] = [
    ConcurrentWrite("raced"),
    KafkaConnectionError(),
    KafkaTimeoutError(),
    NotLeaderForPartitionError(),
    sa.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    sa.InterfaceError("SELECT 1", {}, Exception("connection is closed")),
    sa.TimeoutError(),
    ConnectionRefusedError(),
    TimeoutError(),
]
LASTING: list[BaseException] = [
    ContractError("not JSON"),
    InvalidResource("bad"),
    ProducerClosed(),
    sa.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sa.ProgrammingError("SELEC", {}, Exception("syntax error")),
    KeyError("x"),
    TypeError("bug"),
]


@pytest.mark.parametrize("error", PASSING, ids=lambda e: type(e).__name__)
def test_passing_outages_are_retriable(error: BaseException) -> None:
    assert is_retriable(error)


@pytest.mark.parametrize("error", LASTING, ids=lambda e: type(e).__name__)
def test_other_errors_are_not(error: BaseException) -> None:
    assert not is_retriable(error)


async def test_a_passing_outage_is_retried_until_the_work_succeeds() -> None:
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise sa.OperationalError("SELECT 1", {}, Exception("the database is starting up"))
        return "done"

    assert await retry_until_done(work, asyncio.Event()) == "done"
    assert calls == 3


async def test_a_bug_is_raised_at_the_first_failure() -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        raise ContractError("a record of the wrong shape")

    with pytest.raises(ContractError):
        await retry_until_done(work, asyncio.Event())
    assert calls == 1
