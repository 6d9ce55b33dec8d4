"""Which failures are passing (a database or broker restart, a network blip) and worth retrying.

Herald's own errors say so themselves (`HeraldError.retriable`); aiokafka marks its errors the
same way. Everything else (a bug, a record that breaks its contract, a constraint a retry cannot
satisfy) is not retried: it surfaces instead of looping forever.
"""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy import exc as sa

from herald.core.errors import HeraldError

# The DB-API classes a retry cannot cure: a constraint, a malformed statement, a bad value. The
# others (lost or refused connections, a server shutting down or starting up, which asyncpg
# reports under several classes) are passing.
_LASTING_DB_ERRORS = (sa.IntegrityError, sa.ProgrammingError, sa.DataError, sa.NotSupportedError)


def is_retriable(error: BaseException) -> bool:
    """Whether trying the same work again may succeed."""
    if isinstance(error, HeraldError):
        return error.retriable
    if isinstance(error, KafkaError):
        # A send that timed out while the broker was away is as passing as a lost connection.
        return bool(error.retriable) or isinstance(error, KafkaTimeoutError | KafkaConnectionError)
    if isinstance(error, sa.DBAPIError):
        return error.connection_invalidated or not isinstance(error, _LASTING_DB_ERRORS)
    if isinstance(error, sa.TimeoutError):  # no pooled connection came free in time
        return True
    return isinstance(error, OSError | TimeoutError)
