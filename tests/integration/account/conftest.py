"""A migrated account database for the session, handlers over it, and an in-process server.

The server is built from `server_parts`, as `serve` builds it: the access
table, the deployment's secrets from `callers`, and the service's own token
lookup against the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1._async import HealthServicer

from account_svc import bootstrap as account_bootstrap
from account_svc.service_layer.handlers import AccountHandlers
from account_svc.settings import Settings
from eventbooking import db
from eventbooking.account.v1 import account_pb2_grpc
from eventbooking.localpg import LocalPostgres
from eventbooking.server import authenticator, create_server
from tests.conftest import migrated_database
from tests.integration.account.callers import ADMIN_TOKEN, SERVICE_CREDENTIAL


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
    return Settings(
        database_url=account_db,
        port=0,
        host="127.0.0.1",
        admin_token=ADMIN_TOKEN,
        service_credential=SERVICE_CREDENTIAL,
    )


@pytest.fixture(scope="session")
async def handlers(account_settings: Settings) -> AsyncIterator[AccountHandlers]:
    engine = db.engine_for(account_settings)
    yield account_bootstrap.bootstrap(account_settings, engine=engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def channel(account_settings: Settings) -> AsyncIterator[grpc.aio.Channel]:
    services, lifecycle = account_bootstrap.server_parts(account_settings)
    assert lifecycle.token_lookup is not None
    server, port = create_server(
        account_settings,
        services,
        health=HealthServicer(),
        authenticate=authenticator(account_settings, services, lifecycle.token_lookup),
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)
    for step in lifecycle.shutdown:
        await step()


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> account_pb2_grpc.AccountServiceStub:
    return account_pb2_grpc.AccountServiceStub(channel)
