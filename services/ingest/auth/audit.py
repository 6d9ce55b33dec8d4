"""The audit trail: one structured line per FHIR interaction on the `herald.audit` logger.

Each line names when (UTC, milliseconds), who (client id), what (interaction, resource type and
id), the answer's status and the request id. It never carries a body, a query string or a
header value, so no PHI and no secret reaches it.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Scope

from herald.runtime.logs import log_line, utc_time

log = logging.getLogger("herald.audit")


def interaction(method: str, path: str) -> tuple[str, str | None, str | None]:
    """(interaction, resource type, resource id) of a request to the FHIR API or Canvas."""
    if path.rstrip("/").endswith("/canvas/integration-tasks"):
        return "canvas-snapshot", "Task", None
    parts = [p for p in path.removeprefix("/fhir").split("/") if p]
    if not parts:
        return f"{method.lower()}", None, None
    resource_type, rest = parts[0], parts[1:]
    if resource_type == "metadata":
        return "capabilities", None, None
    if resource_type in (".well-known", "auth"):
        return {"token": "token", "jwks": "keys"}.get(parts[-1], "smart-configuration"), None, None
    if rest and rest[-1].startswith("$"):
        return f"operation:{rest[-1][1:]}", resource_type, rest[0] if len(rest) == 2 else None
    if rest[:1] == ["_search"]:
        return "search", resource_type, None
    if rest[:1] == ["_history"]:
        return "history-type", resource_type, None
    if rest[1:] == ["_history"]:
        return "history-instance", resource_type, rest[0]
    if len(rest) >= 3 and rest[1] == "_history":
        return "vread", resource_type, rest[0]
    # Without an id: a create, a search, or a conditional update, patch or delete.
    by_method = _ON_INSTANCE if rest else _ON_TYPE
    return by_method.get(method, method.lower()), resource_type, rest[0] if rest else None


_ON_INSTANCE = {"GET": "read", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}
_ON_TYPE = {**_ON_INSTANCE, "POST": "create", "GET": "search"}


def _created_id(headers: list[tuple[bytes, bytes]], resource_type: str | None) -> str | None:
    for name, value in headers:
        if name.lower() == b"location" and resource_type:
            _, _, after = value.decode("latin-1").partition(f"/{resource_type}/")
            return after.split("/", 1)[0] or None
    return None


def record(scope: Scope, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """Write the audit line of a /fhir or /canvas request once it is answered.

    Called by the access log (`AccessLog(answered=record)`) as each request ends, in the
    request id's logging context: one pass over the response for both lines.
    """
    if not scope["path"].startswith(("/fhir", "/canvas")) or not log.isEnabledFor(logging.INFO):
        return
    state = scope.get("state") or {}
    name, resource_type, resource_id = interaction(scope["method"], scope["path"])
    if resource_id is None and name in ("create", "canvas-snapshot"):
        resource_id = _created_id(headers, resource_type)
    client_id = state.get("client_id")
    fields = {
        "at": utc_time(time.time()),
        "client_id": client_id,
        "interaction": name,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "status": status,
    }
    log_line(
        log,
        logging.INFO,
        fields,
        "%s %s/%s %s by %s",
        name,
        resource_type or "-",
        resource_id or "-",
        status,
        client_id or "-",
    )
