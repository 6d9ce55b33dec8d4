"""Databases for the store tests: SQLite in a temp folder and a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from herald.runtime.store.database import Database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'herald.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    await db.migrate()
    try:
        yield db
    finally:
        await db.aclose()
