"""What the server interceptors share: the handler types, and the status a call ended with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

# What every server interceptor wraps: a servicer's unary or server-streaming method.
Context = grpc.aio.ServicerContext[Any, Any]
UnaryHandler = Callable[[Any, Context], Awaitable[Any]]
StreamHandler = Callable[[Any, Context], AsyncIterator[Any]]


if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # grpc's classes are generic only in their stubs
    ServerInterceptor = grpc.aio.ServerInterceptor


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the client gets after a handler returned or raised `error`."""
    # None until a handler calls set_code or abort; abort sets it before it raises.
    code: grpc.StatusCode | None = context.code()
    if error is None:
        return code or grpc.StatusCode.OK
    if isinstance(error, grpc.aio.AbortError):
        return code or grpc.StatusCode.UNKNOWN
    # The call was cancelled under the handler: by the client, or by its deadline.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining: float | None = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    # grpc.aio answers any other exception with UNKNOWN.
    return grpc.StatusCode.UNKNOWN
