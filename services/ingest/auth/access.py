"""What a route asks of its caller: a scope, ownership of a subscription, sight of a Task."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from herald.core.errors import Forbidden, Unauthenticated
from herald.core.tenancy import visible
from herald.core.types import JsonObject
from herald.ingest.auth.server import Caller

INTERACTIONS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


# Coroutines, as every dependency: FastAPI runs a plain function in a worker thread.
async def caller(request: Request) -> Caller:
    """The Caller the authentication middleware found for this request."""
    found: Caller | None = getattr(request.state, "caller", None)
    if found is None:
        raise Unauthenticated("this request needs an access token", error=None)
    return found


CallerDep = Annotated[Caller, Depends(caller)]
"""Route parameter type that injects the Caller."""


def require(resource_type: str, permission: str) -> Any:
    """A route dependency: the token must grant `system/<type>.<permission>`."""

    async def check(request: Request) -> None:
        # The caller is read here rather than as a sub-dependency: one dependency less to
        # solve on every request (the route's own CallerDep reads the same state).
        who = await caller(request)
        if not who.allows(resource_type, permission):
            raise Forbidden(
                f"the access token does not grant {INTERACTIONS[permission]} on {resource_type} "
                f"(scope system/{resource_type}.{permission})"
            )

    return Depends(check)


def owns(who: Caller, owner: str | None) -> bool:
    """Whether the caller may see a subscription with this owner (the operator sees all)."""
    return who.client_id is None or owner == who.client_id


def may_see(who: Caller, resource: JsonObject, base: str) -> bool:
    """Whether the caller's tenancy lets it see a resource."""
    return visible(resource, who.organizations, base)
