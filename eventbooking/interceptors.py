"""The one server interceptor that turns exceptions into gRPC statuses.

Domain errors become their status code with the error's own message; a lost
database becomes UNAVAILABLE so callers retry; anything else is a bug,
logged with its traceback and answered INTERNAL with a reference, never
with internals.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc

from eventbooking import db, errors
from eventbooking.rpc import ServerInterceptor, StreamHandler, UnaryHandler

log = logging.getLogger(__name__)

STATUS_FOR: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(error: errors.DomainError) -> grpc.StatusCode:
    """The status code of a domain error, by its nearest class in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL


async def _abort_for(
    exc: Exception, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> NoReturn:
    if isinstance(exc, errors.DomainError):
        await context.abort(status_for(exc), exc.message)
    if db.is_outage(exc):
        log.warning(
            "database unavailable",
            extra={"method": method, "error": type(getattr(exc, "orig", exc)).__name__},
        )
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again")
    ref = uuid.uuid4().hex[:12]
    log.exception("unhandled error", extra={"method": method, "ref": ref})
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the server log")


class ErrorInterceptor(ServerInterceptor):
    """Maps exceptions raised by unary-unary and unary-stream handlers to statuses."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        # Under grpc.aio every handler is a coroutine function or an async generator.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(cast(UnaryHandler, handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(cast(StreamHandler, handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _wrap_unary(inner: UnaryHandler, method: str) -> UnaryHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception becomes a status here
            await _abort_for(exc, context, method)

    return unary


def _wrap_stream(inner: StreamHandler, method: str) -> StreamHandler:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception becomes a status here
            await _abort_for(exc, context, method)

    return stream
