"""Alembic environment: runs on the connection Herald hands over (see store.database.migrate)."""

from alembic import context

from herald.runtime.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
