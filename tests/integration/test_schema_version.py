"""The start-up check that skips Alembic when the schema is already at the newest migration."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from herald.runtime.store.database import MIGRATIONS, Database
from herald.runtime.store.schema_version import is_newest, newest_revision


def test_the_newest_revision_read_from_the_files_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert newest_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_only_a_schema_at_the_newest_revision_counts_as_newest(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.read() as connection:
            assert not await connection.run_sync(is_newest), "an empty database"
        await database.migrate("0007")
        async with database.read() as connection:
            assert not await connection.run_sync(is_newest), "one migration behind"
        await database.migrate()
        async with database.read() as connection:
            assert await connection.run_sync(is_newest)
        await database.migrate()  # nothing to do, and nothing breaks
        async with database.read() as connection:
            assert await connection.run_sync(is_newest)
    finally:
        await database.aclose()
