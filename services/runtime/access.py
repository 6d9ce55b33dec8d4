"""The access log and the request id: one record per HTTP request, one id per unit of work.

A request id comes from the request's X-Request-ID header when it is a plain token (letters,
digits, `._:-`, at most 128), else a new one is made; it is answered in X-Request-ID, set as
the logging context of everything done for the request (see logs.request_id), and carried
with the changes the request writes to the matcher, the dispatcher and the subscribers.

The access record holds the method, the path, the names (never the values) of the query
parameters, the status, the duration and the client id an authentication middleware put in
`request.state.client_id`. Never a header value, never a body.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.runtime.logs import log_line, request_id

log = logging.getLogger("herald.access")

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")  # ASGI header names are lower case
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes come every few seconds: logged at DEBUG only.
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def accepted_request_id(given: str | None) -> str:
    """The given id when it is a plain token, else a new one."""
    if given is not None and _VALID.fullmatch(given):
        return given
    return _uuid4_hex()


_UUID4_CLEAR = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def _uuid4_hex() -> str:
    """`uuid.uuid4().hex` (the same random bits, version and variant) without a UUID object,
    which costs twice the random bytes here."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"


def given_request_id(scope: Scope) -> str | None:
    """The request's X-Request-ID header, as sent (the first one)."""
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


Answered = Callable[[Scope, int, list[tuple[bytes, bytes]]], None]
"""Called with the scope, the status and the response headers as each request ends."""


class AccessLog:
    """ASGI middleware: request id in and out, and one access record per request.

    `answered` (the FHIR API's audit trail) is called as each request ends, before the access
    record is written, in the request id's logging context.
    """

    def __init__(self, app: ASGIApp, answered: Answered | None = None) -> None:
        self.app = app
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (other scopes pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accepted_request_id(given_request_id(scope))
        id_header = (_HEADER_KEY, rid.encode("latin-1"))
        token = request_id.set(rid)
        status = 500  # what the client gets when the app fails before answering
        headers: list[tuple[bytes, bytes]] = []
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_KEY]
                headers.append(id_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.answered is not None:
                self.answered(scope, status, headers)
            path = scope["path"]
            level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
            # The record's fields are worked out only when it is written.
            if log.isEnabledFor(level):
                query = scope.get("query_string", b"").decode("latin-1")
                names = dict.fromkeys(k for k, _ in parse_qsl(query)) if query else ()
                state = scope.get("state") or {}
                fields = {
                    "method": scope.get("method"),
                    "path": path,
                    "query_keys": ",".join(names),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "client_id": state.get("client_id"),
                }
                log_line(log, level, fields, "request")
            request_id.reset(token)
