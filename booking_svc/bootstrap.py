"""The composition root of the booking service; for now, where its migrations live."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_booking"
