"""Alembic history of the booking database."""
