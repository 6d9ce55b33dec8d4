"""Persistence: one schema on PostgreSQL or SQLite, behind small repositories."""
