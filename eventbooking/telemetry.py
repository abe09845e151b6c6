"""OpenTelemetry tracing for every service, configured only by the standard OTEL_* variables.

`setup` installs the process's tracer provider once: `service.name` from
OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES, else the service's own name;
the sampler from OTEL_TRACES_SAMPLER(_ARG); an OTLP gRPC exporter when an
OTLP endpoint is set. Without an endpoint spans are still made, so that logs
and the saga log carry trace ids. OTEL_SDK_DISABLED=true turns it all off.

A server span per RPC comes from our own interceptor, `server_interceptors`:
the span opentelemetry-instrumentation-grpc made, at a fraction of its cost,
and with no traceback recorded for an abort, so that business refusals such
as "sold out" cost no more to trace than a success. Client spans come from
`traced_call` on hot paths and from the upstream `client_interceptors`
elsewhere. Health and reflection calls get no span unless
OTEL_PYTHON_GRPC_EXCLUDED_SERVICES says otherwise: probes every few seconds
would bury the traces people look for.

`inject` and `extract` turn the current trace into a W3C carrier and back,
so that a saga resumed by another process continues the trace that started it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote

import grpc
from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from eventbooking.rpc import Context as ServicerContext
from eventbooking.rpc import (
    ServerInterceptor,
    StreamHandler,
    UnaryHandler,
    final_code,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

T = TypeVar("T")

# Spans of calls made through traced_call; the provider is whichever is installed then.
_CLIENT_TRACER = trace.get_tracer("eventbooking.telemetry")

# The saga log stores carriers, so their format must not depend on OTEL_PROPAGATORS.
_W3C = TraceContextTextMapPropagator()

_UNTRACED_BY_DEFAULT = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

_lock = threading.Lock()
_configured = False
_provider: TracerProvider | None = None


def setup(service_name: str) -> None:
    """Install the global tracer provider and the W3C propagator; later calls do nothing."""
    global _configured, _provider
    with _lock:
        if _configured:
            return
        _configured = True
        if _sdk_disabled():
            log.info("tracing disabled by OTEL_SDK_DISABLED")
            return
        _provider = _build_provider(service_name)
        trace.set_tracer_provider(_provider)
        propagate.set_global_textmap(_W3C)


def shutdown() -> None:
    """Export the spans still queued and stop the provider; safe to call more than once."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.force_flush()
        provider.shutdown()


def _sdk_disabled() -> bool:
    # The SDK's own test for the variable.
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _build_provider(service_name: str) -> TracerProvider:
    """A provider configured from the environment, not yet installed."""
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create lets explicit attributes win over the environment; here the environment wins.
    from_env = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    name = str(from_env) if from_env else service_name
    # No sampler argument: the provider reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The exporter reads the endpoint, OTEL_EXPORTER_OTLP_INSECURE and headers itself.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info(
        "tracing configured",
        extra={"service_name": name, "otlp_endpoint": endpoint or "none"},
    )
    return provider


def _traced_filter() -> Callable[[Any], bool]:
    """Whether a call gets a span: not when its service is excluded."""
    value = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES")
    excluded = (
        _UNTRACED_BY_DEFAULT
        if value is None
        else tuple(part.strip() for part in value.split(",") if part.strip())
    )

    def traced(details: Any) -> bool:
        method = details.method
        # grpc.aio hands clients the method as bytes (grpc/grpc#31092).
        if isinstance(method, bytes):
            method = method.decode()
        return str(method).lstrip("/").split("/", 1)[0] not in excluded

    return traced


def server_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """A server span per RPC, continuing the trace found in the request metadata.

    It goes first in the server's interceptors, so that the span covers the
    whole call and sees the status the inner interceptors answered with.
    """
    tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
    return [ServerSpans(tracer, _traced_filter())]


# The semantic conventions make a gRPC SERVER span an error only for these codes; the
# others (FAILED_PRECONDITION, NOT_FOUND, ...) are answers, and leave the status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# How a behavior ends with a status grpc already holds, or a cancellation, not a bug.
_ANSWERED = (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit)

_Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[_Metadata]):
    """Reads propagation fields straight from grpc's metadata tuples, without a dict."""

    def get(self, carrier: _Metadata, key: str) -> list[str] | None:
        values = [value for k, value in carrier if k == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: _Metadata) -> list[str]:
        return [key for key, _ in carrier]


_METADATA = _MetadataGetter()


@dataclass(frozen=True, slots=True)
class _Method:
    """What every span of one RPC method shares, worked out on its first call."""

    name: str
    attributes: dict[str, AttributeValue]


class ServerSpans(ServerInterceptor):
    """Makes a SERVER span around unary-unary and unary-stream calls; other kinds pass through.

    The span is named after the full method and carries rpc.system,
    rpc.service, rpc.method, rpc.grpc.status_code, rpc.user_agent and the
    peer's net.peer.ip and net.peer.port. Its parent is the context the
    global propagator extracts from the request metadata. The final code is
    read from the servicer context after the handler, where abort and
    set_code leave it, so the context is not wrapped, and an abort is never
    recorded as an exception.
    """

    def __init__(self, tracer: trace.Tracer, traced: Callable[[Any], bool]) -> None:
        self._tracer = tracer
        self._traced = traced
        # Only methods with a handler get in, so clients cannot grow it.
        self._methods: dict[str, _Method | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        try:
            method = self._methods[full_method]
        except KeyError:
            method = self._methods[full_method] = self._describe(handler_call_details)
        if method is None:
            return handler
        # Under grpc.aio every behavior is a coroutine function or an async generator.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast(UnaryHandler, handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(cast(StreamHandler, handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _describe(self, handler_call_details: grpc.HandlerCallDetails) -> _Method | None:
        if not self._traced(handler_call_details):
            return None
        name = handler_call_details.method
        service, _, method = name.lstrip("/").partition("/")
        return _Method(name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})

    def _start(
        self, method: _Method, context: ServicerContext
    ) -> tuple[trace.Span, Token[Context]]:
        metadata = cast("_Metadata | None", context.invocation_metadata())
        parent = propagate.extract(metadata, getter=_METADATA) if metadata else None
        # The SDK copies the attributes, so every span of the method can share the dict.
        span = self._tracer.start_span(
            method.name,
            parent,
            kind=trace.SpanKind.SERVER,
            attributes=method.attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        if span.is_recording():
            span.set_attributes(_call_attributes(context, metadata))
        # One attach for parent and span: the handler keeps any baggage extracted with it.
        return span, context_api.attach(trace.set_span_in_context(span, parent))

    def _unary(self, inner: UnaryHandler, method: _Method) -> UnaryHandler:
        start = self._start

        async def unary(request: Any, context: ServicerContext) -> Any:
            span, token = start(method, context)
            try:
                response = await inner(request, context)
            except BaseException as error:
                _finish(span, token, context, error)
                raise
            _finish(span, token, context, None)
            return response

        return unary

    def _stream(self, inner: StreamHandler, method: _Method) -> StreamHandler:
        start = self._start

        async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            span, token = start(method, context)
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as error:
                _finish(span, token, context, error)
                raise
            _finish(span, token, context, None)

        return stream


def _call_attributes(
    context: ServicerContext, metadata: _Metadata | None
) -> dict[str, AttributeValue]:
    """The attributes that differ from call to call: the client's address and user agent."""
    attributes: dict[str, AttributeValue] = {}
    # "ipv4:10.0.0.1:57284", "ipv6:%5B::1%5D:57284"; unix sockets have no address to show.
    peer = context.peer()
    if peer.startswith(("ipv4:", "ipv6:")):
        host, _, port = peer[5:].partition(",")[0].rpartition(":")
        attributes["net.peer.ip"] = unquote(host).strip("[]") if "%" in host else host
        if port.isdigit():
            attributes["net.peer.port"] = int(port)
    for key, value in metadata or ():
        if key == "user-agent" and isinstance(value, str):
            attributes["rpc.user_agent"] = value
            break
    return attributes


def _finish(
    span: trace.Span, token: Token[Context], context: ServicerContext, error: BaseException | None
) -> None:
    """Set the span's code and status from how the behavior ended, then end it."""
    context_api.detach(token)
    if span.is_recording():
        code = final_code(context, error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            if error is None or isinstance(error, _ANSWERED):
                details = context.details() or code.value[1]
            else:
                # A bug the error interceptor did not map: rare, so its traceback is worth it.
                span.record_exception(error)
                details = f"{type(error).__name__}: {error}"
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}"))
    span.end()


def client_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """A client span per call, its context injected into the request metadata."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors = aio_client_interceptors(
        tracer_provider=tracer_provider, filter_=_traced_filter()
    )
    return cast("list[grpc.aio.ClientInterceptor]", interceptors)


async def traced_call(
    method: str,
    metadata: Sequence[tuple[str, str]],
    call: Callable[[Sequence[tuple[str, str]]], Awaitable[T]],
) -> T:
    """Make `call` with `metadata` in a CLIENT span named after the gRPC `method`.

    The span is the one the client interceptor above makes (name, kind,
    rpc.* attributes, status), and its context travels in the metadata. A
    hot path uses this on a channel without interceptors: grpc.aio runs
    every intercepted call through an extra task and wrapper, which cost
    the booking saga a tenth of its CPU (docs/performance.md).
    """
    service, _, name = method.lstrip("/").rpartition("/")
    with _CLIENT_TRACER.start_as_current_span(
        method,
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            reply = await call((*metadata, *inject().items()))
        except grpc.aio.AioRpcError as err:
            span.set_attribute("rpc.grpc.status_code", err.code().value[0])
            span.set_status(Status(StatusCode.ERROR, f"{err.code().name}: {err.details()}"))
            raise
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        return reply


def inject() -> dict[str, str]:
    """The current span context as a W3C carrier (traceparent, tracestate); empty without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """A context whose parent is the span in `carrier`; empty when it holds none."""
    return _W3C.extract(carrier)


def current_ids() -> tuple[str | None, str | None]:
    """Hex trace id and span id of the current span, or (None, None) without a valid one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    trace_id, span_id = span_context.trace_id, span_context.span_id
    return trace.format_trace_id(trace_id), trace.format_span_id(span_id)
