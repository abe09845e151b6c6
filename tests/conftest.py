"""Fixtures every tier shares: one real PostgreSQL per test session.

The server is the project's own embedded PostgreSQL, started in a temporary
folder on a free port. Each service gets a database of its own, migrated
once; tests use random ids and emails instead of truncating tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbooking import db
from eventbooking.localpg import LocalPostgres, free_port


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
    pg.start()
    yield pg
    pg.stop(mode="immediate")


def migrated_database(
    pg: LocalPostgres, service: str, *, migrations: Path, version_table: str
) -> str:
    """A new database for `service` at the newest schema; returns its URL."""
    url = pg.create_database(f"{service}_{uuid.uuid4().hex[:8]}")
    db.upgrade(url, migrations=migrations, version_table=version_table)
    return url


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"
