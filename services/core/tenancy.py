"""Tenancy: which Tasks a client acting for organizations may see, and which filters pin them.

A tenant (a client registered with organizations) sees a Task when its `owner` or its
`requester` references one of those organizations. References are compared in relative form
(`Organization/123`); an absolute reference counts when it is under Herald's own FHIR base.
"""

from __future__ import annotations

from collections.abc import Collection

from herald.core.errors import Forbidden
from herald.core.subscriptions import Subscription
from herald.core.types import JsonObject

TENANT_ELEMENTS = ("owner", "requester")


def relative(reference: str, base: str) -> str:
    """A reference in relative form when it points into `base`; unchanged otherwise."""
    prefix = base.rstrip("/") + "/"
    return reference[len(prefix) :] if reference.startswith(prefix) else reference


def organizations_of(resource: JsonObject, base: str) -> set[str]:
    """The relative references of the resource's owner and requester."""
    found = set()
    for element in TENANT_ELEMENTS:
        value = resource.get(element)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str):
            found.add(relative(reference, base))
    return found


def visible(resource: JsonObject, organizations: Collection[str] | None, base: str) -> bool:
    """Whether a client acting for `organizations` (None: not a tenant) may see the resource."""
    if organizations is None:
        return True
    return not organizations_of(resource, base).isdisjoint(organizations)


def check_pinned(subscription: Subscription, organizations: Collection[str], base: str) -> None:
    """Refuse a tenant's subscription unless a filter pins owner or requester to its
    organizations (each OR'ed value one of them)."""
    for criteria in subscription.criteria:
        for condition in criteria.conditions:
            if (
                condition.parameter.name in TENANT_ELEMENTS
                and condition.modifier is None
                and condition.values
                and all(relative(v, base) in organizations for v in condition.values)
            ):
                return
    raise Forbidden(
        "a client acting for organizations must filter its subscription by owner or requester "
        f"on those organizations ({', '.join(sorted(organizations))}), e.g. "
        f"Task?owner={sorted(organizations)[0]}",
        expression="Subscription._criteria",
    )


CANVAS_SOURCE = "urn:herald:source:canvas"
"""meta.source of the Tasks the Canvas endpoint writes; only that endpoint may change them."""


def from_canvas(resource: JsonObject | None) -> bool:
    """Whether a stored resource came from the Canvas source."""
    meta = resource.get("meta") if resource else None
    return isinstance(meta, dict) and meta.get("source") == CANVAS_SOURCE
