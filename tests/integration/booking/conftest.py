"""A migrated booking database for the session, and an engine over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc import bootstrap as booking_bootstrap
from eventbooking import db
from eventbooking.localpg import LocalPostgres
from tests.conftest import migrated_database


@pytest.fixture(scope="session")
def booking_db(postgres: LocalPostgres) -> str:
    return migrated_database(
        postgres,
        "booking",
        migrations=booking_bootstrap.MIGRATIONS,
        version_table=booking_bootstrap.VERSION_TABLE,
    )


@pytest.fixture(scope="session")
async def engine(booking_db: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(booking_db, pool_size=4)
    yield engine
    await engine.dispose()
