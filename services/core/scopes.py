"""SMART system scopes: `system/Task.rs` (v2) and `system/Task.read` (v1), as permission sets.

A scope grants interactions on a resource type: c (create), r (read, vread, instance
operations), u (update), d (delete), s (search, type-level operations). The v1 suffixes map to
v2 permissions: `read` = rs, `write` = cud, `*` = cruds. `*` as the resource type means every
type Herald serves. Scopes Herald does not know (openid, launch, user/…) grant nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RESOURCE_TYPES = ("Subscription", "Task")
PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(?P<type>[A-Za-z]+|\*)\.(?P<perm>[a-z]+|\*)$")

Permission = tuple[str, str]
"""(resource type, one letter of PERMISSIONS)."""


class InvalidScope(ValueError):
    """A scope string Herald cannot grant."""


def parse_scope(scope: str) -> frozenset[Permission]:
    """The permissions one system scope grants; InvalidScope when it is not one Herald serves."""
    found = _SCOPE.match(scope)
    if found is None:
        raise InvalidScope(f"{scope!r} is not a SMART system scope (system/Type.cruds)")
    resource_type, permission = found["type"], found["perm"]
    if resource_type != "*" and resource_type not in RESOURCE_TYPES:
        raise InvalidScope(f"{scope!r}: Herald serves {', '.join(RESOURCE_TYPES)}")
    letters = _V1.get(permission, permission)
    # SMART v2 writes the letters once each, in the order c r u d s.
    if letters not in _V1.values() and not _in_order(letters):
        raise InvalidScope(f"{scope!r}: permissions are letters of 'cruds', in that order")
    types = RESOURCE_TYPES if resource_type == "*" else (resource_type,)
    return frozenset((t, letter) for t in types for letter in letters)


def _in_order(letters: str) -> bool:
    positions = [PERMISSIONS.find(letter) for letter in letters]
    return bool(letters) and -1 not in positions and positions == sorted(set(positions))


def parse_scopes(text: str, *, strict: bool) -> frozenset[Permission]:
    """The permissions of a space-separated scope list; unknown scopes raise when strict,
    otherwise grant nothing (OAuth clients may ask for more than one server serves)."""
    granted: set[Permission] = set()
    for scope in text.split():
        try:
            granted |= parse_scope(scope)
        except InvalidScope:
            if strict:
                raise
    return frozenset(granted)


def format_scopes(permissions: Iterable[Permission]) -> str:
    """Permissions as SMART v2 scopes, one per resource type: `system/Subscription.crud …`."""
    by_type: dict[str, set[str]] = {}
    for resource_type, letter in permissions:
        by_type.setdefault(resource_type, set()).add(letter)
    return " ".join(
        f"system/{t}.{''.join(p for p in PERMISSIONS if p in by_type[t])}" for t in sorted(by_type)
    )


def supported_scopes() -> list[str]:
    """The scopes to advertise in the SMART configuration."""
    return [f"system/{t}.{p}" for t in RESOURCE_TYPES for p in ("cruds", "rs", "read", "write")]
