"""A tiny gRPC service on a real grpc.aio server, for the interceptors' tests.

`test.v1.Probe` speaks raw bytes: the request names what the handler does
(`ok`, `domain`, `bug`, `abort`, `unavailable`, `set-code`, `slow`), so
each test picks the outcome it wants to see counted or traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest

from eventbooking import errors
from eventbooking.server import Service

PROBE = "test.v1.Probe"
ServicerContext = grpc.aio.ServicerContext[bytes, bytes]


async def _act(request: bytes, context: ServicerContext) -> None:
    if request == b"domain":
        raise errors.FailedPrecondition("sold out")
    if request == b"bug":
        raise ValueError("a bug")
    if request == b"abort":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"unavailable":
        await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    if request == b"set-code":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
    if request == b"slow":
        await asyncio.sleep(5)


async def echo(request: bytes, context: ServicerContext) -> bytes:
    await _act(request, context)
    return request


async def stream(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
    # One item before the outcome, so that errors come mid-stream.
    yield b"first"
    await _act(request, context)
    yield b"last"


def probe_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        PROBE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


def probe_service() -> Service:
    """The probe as a `Service` for `eventbooking.server.create_server`."""
    return Service(PROBE, lambda server: server.add_generic_rpc_handlers((probe_handler(),)))


class Probe:
    """A client of the probe: `await probe.echo(b"ok")`, `await probe.stream(b"domain")`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def echo(self, request: bytes, *, deadline: float = 5) -> grpc.StatusCode:
        try:
            await self.channel.unary_unary(f"/{PROBE}/Echo")(request, timeout=deadline)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    async def stream(self, request: bytes, *, deadline: float = 5) -> grpc.StatusCode:
        try:
            async for _ in self.channel.unary_stream(f"/{PROBE}/Stream")(request, timeout=deadline):
                pass
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK


StartProbe = Callable[..., Awaitable[Probe]]


@pytest.fixture
async def start_probe() -> AsyncIterator[StartProbe]:
    """Start a server with the probe behind `interceptors`; return a client of it."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        *,
        client_interceptors: Sequence[Any] = (),
    ) -> Probe:
        server = grpc.aio.server(interceptors=list(interceptors))
        server.add_generic_rpc_handlers((probe_handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=list(client_interceptors) or None
        )
        channels.append(channel)
        return Probe(channel)

    yield start
    for channel in channels:
        await channel.close(None)
    for server in servers:
        await server.stop(None)
