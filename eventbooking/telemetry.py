"""OpenTelemetry tracing for every service, configured only by the standard OTEL_* variables.

`setup` installs the process's tracer provider once: `service.name` from
OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES, else the service's own name;
the sampler from OTEL_TRACES_SAMPLER(_ARG); an OTLP gRPC exporter when an
OTLP endpoint is set. Without an endpoint spans are still made, so that logs
and the saga log carry trace ids. OTEL_SDK_DISABLED=true turns it all off.

gRPC server and client spans come from opentelemetry-instrumentation-grpc
through the interceptors below. Health and reflection calls get no span
unless OTEL_PYTHON_GRPC_EXCLUDED_SERVICES says otherwise: probes every few
seconds would bury the traces people look for.

`inject` and `extract` turn the current trace into a W3C carrier and back,
so that a saga resumed by another process continues the trace that started it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
    """A server span per RPC, continuing the trace found in the request metadata."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor = aio_server_interceptor(tracer_provider=tracer_provider, filter_=_traced_filter())
    return [cast("grpc.aio.ServerInterceptor[Any, Any]", interceptor)]


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
