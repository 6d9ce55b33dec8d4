"""Whether a database's schema is already at the newest migration, without loading Alembic.

Every service migrates at start, and Alembic's import alone (its DDL implementations for every
dialect, autogenerate) was a fifth of the CPU a restarted matcher or dispatcher spends before
it takes its partitions back. When the stamped revision is the newest one there is nothing to
run, so Alembic is loaded only when there is.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

VERSIONS = Path(__file__).with_name("migrations") / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default, which Herald's migrations keep

_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"\s*$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*(?:"([^"]+)"|None)\s*$', re.MULTILINE)


@functools.cache
def newest_revision() -> str | None:
    """The single head of the migration files, or None when they do not say so plainly."""
    revisions, parents = set(), set()
    for path in VERSIONS.glob("*.py"):
        if path.name == "__init__.py":
            continue
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None  # not the plain form: let Alembic read it
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def is_newest(connection: Connection) -> bool:
    """Whether the schema is stamped with the newest revision (nothing to upgrade)."""
    head = newest_revision()
    if head is None or not inspect(connection).has_table(VERSION_TABLE):
        return False
    stamped = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    return list(stamped) == [head]
