"""Alembic history of the account database."""
