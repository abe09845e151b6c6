"""The event server as `server_parts` wires it: account tokens checked by a live account_svc.

Both servers run in-process on real databases, sharing one deployment's
admin token and service credential.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1._async import HealthServicer

from account_svc import bootstrap as account_bootstrap
from account_svc.settings import Settings as AccountSettings
from event_svc import bootstrap as event_bootstrap
from event_svc.settings import Settings
from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.event.v1 import event_pb2 as pb
from eventbooking.event.v1 import event_pb2_grpc
from eventbooking.localpg import LocalPostgres
from eventbooking.server import Lifecycle, Service, authenticator, create_server
from tests.conftest import migrated_database, unique_email
from tests.integration.event.callers import (
    ADMIN_TOKEN,
    SERVICE_CREDENTIAL,
    UNKNOWN_TOKEN,
    bearer,
)
from tests.integration.event.conftest import create_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def account_db(postgres: LocalPostgres) -> str:
    return migrated_database(
        postgres,
        "account",
        migrations=account_bootstrap.MIGRATIONS,
        version_table=account_bootstrap.VERSION_TABLE,
    )


async def start(
    settings: AccountSettings | Settings, services: list[Service], lifecycle: Lifecycle
) -> tuple[grpc.aio.Server, int]:
    assert lifecycle.token_lookup is not None
    server, port = create_server(
        settings,
        services,
        health=HealthServicer(),
        authenticate=authenticator(settings, services, lifecycle.token_lookup),
    )
    await server.start()
    return server, port


@dataclass
class Deployment:
    accounts: account_pb2_grpc.AccountServiceStub
    events: event_pb2_grpc.EventServiceStub
    account_server: grpc.aio.Server


@pytest.fixture
async def deployment(account_db: str, event_settings: Settings) -> AsyncIterator[Deployment]:
    account_settings = AccountSettings(
        database_url=account_db,
        port=0,
        host="127.0.0.1",
        admin_token=ADMIN_TOKEN,
        service_credential=SERVICE_CREDENTIAL,
    )
    account_parts = account_bootstrap.server_parts(account_settings)
    account_server, account_port = await start(account_settings, *account_parts)
    settings = event_settings.model_copy(
        update={"account_address": f"127.0.0.1:{account_port}", "db_pool_size": 2}
    )
    event_parts = event_bootstrap.server_parts(settings)
    event_server, event_port = await start(settings, *event_parts)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{account_port}") as to_accounts,
        grpc.aio.insecure_channel(f"127.0.0.1:{event_port}") as to_events,
    ):
        yield Deployment(
            account_pb2_grpc.AccountServiceStub(to_accounts),
            event_pb2_grpc.EventServiceStub(to_events),
            account_server,
        )
    await event_server.stop(None)
    await account_server.stop(None)
    for step in (*event_parts[1].shutdown, *account_parts[1].shutdown):
        await step()


async def new_token(accounts: account_pb2_grpc.AccountServiceStub) -> str:
    created = await accounts.CreateAccount(
        account_pb2.CreateAccountRequest(email=unique_email(), display_name="Remote")
    )
    token: str = created.api_token
    return token


async def expect_code(call: object, code: grpc.StatusCode, *secrets: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() is code, info.value.details()
    for secret in secrets:
        assert secret not in str(info.value)


async def test_a_token_account_svc_issued_lets_its_holder_read_events(
    deployment: Deployment,
) -> None:
    event = await create_event(deployment.events)
    token = await new_token(deployment.accounts)
    reply = await deployment.events.GetEvent(
        pb.GetEventRequest(event_id=event.event_id), metadata=bearer(token)
    )
    assert reply.event.event_id == event.event_id


async def test_an_unknown_token_is_unauthenticated_and_a_user_may_not_move_seats(
    deployment: Deployment,
) -> None:
    event = await create_event(deployment.events)
    await expect_code(
        deployment.events.GetEvent(
            pb.GetEventRequest(event_id=event.event_id), metadata=bearer(UNKNOWN_TOKEN)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        UNKNOWN_TOKEN,
    )
    token = await new_token(deployment.accounts)
    await expect_code(
        deployment.events.ReserveSeats(
            pb.ReserveSeatsRequest(
                reservation_id=str(uuid.uuid4()),
                event_id=event.event_id,
                quantity=1,
            ),
            metadata=bearer(token),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        token,
    )
    got = await deployment.events.GetEvent(
        pb.GetEventRequest(event_id=event.event_id), metadata=bearer(token)
    )
    assert got.event.held_seats == 0


async def test_with_account_svc_down_a_new_token_is_unavailable_not_refused(
    deployment: Deployment,
) -> None:
    event = await create_event(deployment.events)
    token = await new_token(deployment.accounts)
    await deployment.account_server.stop(None)
    await expect_code(
        deployment.events.GetEvent(
            pb.GetEventRequest(event_id=event.event_id), metadata=bearer(token)
        ),
        grpc.StatusCode.UNAVAILABLE,
        token,
    )
