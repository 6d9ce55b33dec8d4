"""States are types: no module compares or sets a state through a bare string."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import herald
from herald.core.states import CircuitState, DeliveryResult, SubscriptionStatus

SERVICES = Path(herald.__file__).parent
STATES = {m.value for enum in (SubscriptionStatus, DeliveryResult, CircuitState) for m in enum}
# Values no other vocabulary uses: they may not appear as literals anywhere outside the enums.
ONLY_STATES = {"http_error", "connection_error", "circuit_open", "half-open"}
STATE_WORDS = ("status", "outcome", "state")


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for element in node.elts for v in _literals(element)]
    return []


def bare_states(source: str) -> list[tuple[int, str]]:
    """(line, literal) of each state written as a bare string in a state context."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
            names += [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
            if any(word in name.lower() for name in names for word in STATE_WORDS):
                for side in [node.left, *node.comparators]:
                    found += [(node.lineno, v) for v in _literals(side) if v in STATES]
        elif isinstance(node, ast.keyword) and node.arg in ("status", "expected", "outcome"):
            found += [(node.value.lineno, v) for v in _literals(node.value) if v in STATES]
        elif isinstance(node, ast.Constant) and node.value in ONLY_STATES:
            found.append((node.lineno, str(node.value)))
    return found


def test_the_finder_finds_bare_states() -> None:
    source = 'if s.status == "off" or x.outcome in ("gone", "timeout"): f(expected="active")\n'
    assert sorted(v for _, v in bare_states(source)) == ["active", "gone", "off", "timeout"]
    assert bare_states('y = "circuit_open"\n') == [(1, "circuit_open")]
    assert bare_states('topic_status = d.get("status", "draft")\n') == []
    assert bare_states('ok = k not in ("status", "error")\n') == []


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted(SERVICES.rglob("*.py"))
        if p.name != "states.py" and "migrations" not in p.parts
    ],
    ids=lambda p: str(p.relative_to(SERVICES)),
)
def test_no_bare_state_literals(path: Path) -> None:
    assert bare_states(path.read_text()) == [], "use herald.core.states instead of strings"
