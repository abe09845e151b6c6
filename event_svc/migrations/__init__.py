"""Alembic history of the event database."""
