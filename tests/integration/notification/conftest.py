"""An in-process notification_svc on a real grpc.aio server, with its access checks, and a stub.

The server checks tokens as `serve` has it do; account tokens come from a
fake lookup (`FakeAccountTokens`) instead of account_svc, which is not
running here. Calls carry `service()` (sends), `admin()` or `accounts.bearer(id)`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1._async import HealthServicer

from eventbooking.localpg import free_port as pick_free_port
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from eventbooking.server import authenticator, create_server
from notification_svc.adapters.sinks import Sink
from notification_svc.bootstrap import server_parts
from notification_svc.settings import Settings

StartServer = Callable[..., Awaitable[pb_grpc.NotificationServiceStub]]
Metadata = Sequence[tuple[str, str]]

# The deployment's secrets in these tests; each at least 16 characters, as settings require.
ADMIN_TOKEN = "test-admin-token-0123456789"
SERVICE_CREDENTIAL = "test-service-credential-0123456789"
SECRETS = {"admin_token": ADMIN_TOKEN, "service_credential": SERVICE_CREDENTIAL}


def bearer(token: str) -> Metadata:
    """The metadata of a call made with `token`."""
    return (("authorization", f"Bearer {token}"),)


def service() -> Metadata:
    """The metadata of a call from another service of the deployment (booking_svc)."""
    return bearer(SERVICE_CREDENTIAL)


def admin() -> Metadata:
    return bearer(ADMIN_TOKEN)


class FakeAccountTokens:
    """account_svc's AuthenticateToken as a lookup: tokens handed out here, and nothing else."""

    def __init__(self) -> None:
        self._accounts: dict[str, uuid.UUID] = {}

    def issue(self, account_id: str) -> str:
        token = f"user-token-{uuid.uuid4().hex}"
        self._accounts[token] = uuid.UUID(account_id)
        return token

    def bearer(self, account_id: str) -> Metadata:
        """The metadata of a call made with a new token of `account_id`."""
        return bearer(self.issue(account_id))

    async def __call__(self, token: str) -> uuid.UUID | None:
        return self._accounts.get(token)


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


@pytest.fixture
def accounts() -> FakeAccountTokens:
    return FakeAccountTokens()


@pytest.fixture
async def start_server(accounts: FakeAccountTokens) -> AsyncIterator[StartServer]:
    """Start a server with settings overrides (sinks from them unless `fake_sinks`); return a stub."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        *,
        fake_sinks: Sequence[Sink] | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        **overrides: object,
    ) -> pb_grpc.NotificationServiceStub:
        settings = Settings(host="127.0.0.1", port=0, **{**SECRETS, **overrides})
        services, _ = server_parts(settings, sinks=fake_sinks)
        server, port = create_server(
            settings,
            services,
            health=HealthServicer(),
            authenticate=authenticator(settings, services, accounts),
        )
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options)
        channels.append(channel)
        return pb_grpc.NotificationServiceStub(channel)

    yield start
    for channel in channels:
        await channel.close(None)
    for server in servers:
        await server.stop(None)
