"""A migrated account database for the session, and handlers over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from account_svc import bootstrap as account_bootstrap
from account_svc.service_layer.handlers import AccountHandlers
from account_svc.settings import Settings
from eventbooking import db
from eventbooking.localpg import LocalPostgres
from tests.conftest import migrated_database


@pytest.fixture(scope="session")
def account_db(postgres: LocalPostgres) -> str:
    return migrated_database(
        postgres,
        "account",
        migrations=account_bootstrap.MIGRATIONS,
        version_table=account_bootstrap.VERSION_TABLE,
    )


@pytest.fixture(scope="session")
def account_settings(account_db: str) -> Settings:
    return Settings(database_url=account_db, port=0, host="127.0.0.1")


@pytest.fixture(scope="session")
async def handlers(account_settings: Settings) -> AsyncIterator[AccountHandlers]:
    engine = db.engine_for(account_settings)
    yield account_bootstrap.bootstrap(account_settings, engine=engine)
    await engine.dispose()
