"""An in-process notification_svc on a real grpc.aio server, and a client stub to call it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1._async import HealthServicer

from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from eventbooking.server import create_server
from notification_svc.adapters.sinks import Sink
from notification_svc.bootstrap import server_parts
from notification_svc.settings import Settings

StartServer = Callable[..., Awaitable[pb_grpc.NotificationServiceStub]]


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a server with settings overrides (sinks from them unless `fake_sinks`); return a stub."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        *,
        fake_sinks: Sequence[Sink] | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        **overrides: object,
    ) -> pb_grpc.NotificationServiceStub:
        settings = Settings(host="127.0.0.1", port=0, **overrides)
        services, _ = server_parts(settings, sinks=fake_sinks)
        server, port = create_server(settings, services, health=HealthServicer())
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
