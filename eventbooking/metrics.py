"""Prometheus metrics shared by every service: RPC counts and latencies, and their endpoint.

`RpcMetrics` is a server interceptor counting each RPC by service, method
and the status code the client gets, and timing it. It must run outside the
error interceptor so that it sees the status a raised error was mapped to.
`serve` exposes a registry over HTTP for Prometheus to scrape.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, cast

import grpc
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from eventbooking.rpc import (
    Context,
    ServerInterceptor,
    StreamHandler,
    UnaryHandler,
    final_code,
)


class _RpcCollectors(NamedTuple):
    requests: Counter
    duration: Histogram


# One set per registry: prometheus_client refuses a second metric with the same name.
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, _RpcCollectors] = (
    weakref.WeakKeyDictionary()
)


def _collectors(registry: CollectorRegistry) -> _RpcCollectors:
    if registry not in _COLLECTORS:
        _COLLECTORS[registry] = _RpcCollectors(
            Counter(
                "eventbooking_rpc_requests",
                "RPCs handled, by service, method and the gRPC status code answered",
                ["service", "method", "code"],
                registry=registry,
            ),
            Histogram(
                "eventbooking_rpc_duration_seconds",
                "Time from receiving an RPC to its last response or error",
                ["service", "method"],
                registry=registry,
            ),
        )
    return _COLLECTORS[registry]


class RpcMetrics(ServerInterceptor):
    """Counts and times every unary and streaming RPC by its final status code."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._metrics = _collectors(registry)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        # An unknown method has no handler; counting it would label series with client input.
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        labels = (service, method)
        serializers: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        # Under grpc.aio every behavior is a coroutine function or an async generator.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast(UnaryHandler, handler.unary_unary), labels), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(cast(UnaryHandler, handler.stream_unary), labels), **serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(cast(StreamHandler, handler.unary_stream), labels), **serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(cast(StreamHandler, handler.stream_stream), labels), **serializers
            )
        return handler

    def _unary(self, inner: UnaryHandler, labels: tuple[str, str]) -> UnaryHandler:
        async def unary(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                response = await inner(request, context)
            except BaseException as error:
                self._record(labels, final_code(context, error), started)
                raise
            self._record(labels, final_code(context, None), started)
            return response

        return unary

    def _stream(self, inner: StreamHandler, labels: tuple[str, str]) -> StreamHandler:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as error:
                self._record(labels, final_code(context, error), started)
                raise
            self._record(labels, final_code(context, None), started)

        return stream

    def _record(self, labels: tuple[str, str], code: grpc.StatusCode, started: float) -> None:
        self._metrics.requests.labels(*labels, code.name).inc()
        self._metrics.duration.labels(*labels).observe(
            time.perf_counter() - started, exemplar=_exemplar()
        )


def _exemplar() -> dict[str, str] | None:
    """The sampled trace the observation belongs to, shown to OpenMetrics scrapers."""
    span_context = trace.get_current_span().get_span_context()
    if not (span_context.is_valid and span_context.trace_flags.sampled):
        return None
    return {"trace_id": trace.format_trace_id(span_context.trace_id)}


def serve(port: int, host: str, *, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve `registry` at http://host:port/metrics from a daemon thread; port 0 serves nothing.

    Raises OSError when the port cannot be bound.
    """
    if port > 0:
        start_http_server(port, addr=host, registry=registry)
