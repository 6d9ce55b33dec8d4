"""Modules stay small enough to read in one sitting: none over 600 lines (migrations aside)."""

from __future__ import annotations

from pathlib import Path

import herald

SERVICES = Path(herald.__file__).parent
LIMIT = 600


def test_no_module_over_the_limit() -> None:
    sizes = {
        str(path.relative_to(SERVICES)): len(path.read_text().splitlines())
        for path in SERVICES.rglob("*.py")
        if "migrations" not in path.parts
    }
    assert len(sizes) > 50  # the walk found the package
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
