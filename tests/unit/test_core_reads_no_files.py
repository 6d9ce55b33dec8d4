"""Core receives data, never paths: no module of herald.core opens or finds a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import herald.core

CORE = Path(herald.core.__file__).parent
FILE_MODULES = {"pathlib", "importlib.resources", "os", "io", "shutil", "glob"}
FILE_CALLS = {"open", "read_text", "read_bytes", "glob", "rglob", "iterdir"}


def file_access(source: str) -> list[str]:
    """What in a module's source touches the file system."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in FILE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in FILE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in FILE_CALLS:
                found.append(f"{name}() at line {node.lineno}")
    return found


def test_the_check_sees_file_access() -> None:
    assert file_access("from pathlib import Path\nx = Path('a').read_text()\n") == [
        "pathlib",
        "read_text() at line 2",
    ]


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_opens_no_files(path: Path) -> None:
    assert file_access(path.read_text()) == []
