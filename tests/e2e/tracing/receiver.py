"""A real OTLP/gRPC trace receiver that keeps every span it is sent, for tests to search.

It implements the collector's TraceService from the opentelemetry-proto
package, as Jaeger or an OpenTelemetry Collector would, so the services
export to it exactly as they export to those.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One exported span, flattened out of its ResourceSpans and ScopeSpans; ids in hex."""

    service: str
    trace_id: str
    span_id: str
    # "" for a root span.
    parent_span_id: str
    name: str
    # SERVER, CLIENT, INTERNAL, PRODUCER or CONSUMER.
    kind: str
    attributes: dict[str, Any]
    links: tuple[Link, ...]
    # UNSET, OK or ERROR.
    status: str
    status_message: str
    start_ns: int
    end_ns: int

    def describe(self) -> str:
        return f"{self.service} {self.kind} {self.name!r} trace={self.trace_id} span={self.span_id}"


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _span(service: str, span: trace_pb2.Span) -> Span:
    return Span(
        service=service,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        attributes=_attributes(span.attributes),
        links=tuple(
            Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
            for link in span.links
        ),
        status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Stores what it is sent; `wait_for` polls the store until a test finds what it wants."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[Span] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                received.extend(_span(service, span) for span in scope_spans.spans)
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans() if s.trace_id == trace_id]

    def trace_ids(self) -> set[str]:
        return {s.trace_id for s in self.spans()}

    def wait_for(
        self, found: Callable[[list[Span]], T | None], *, what: str, timeout: float = 30.0
    ) -> T:
        """Poll until `found(every span so far)` is not None, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.spans())
            if result is not None:
                return result
            if time.monotonic() > deadline:
                recent = "\n".join("    " + s.describe() for s in self.spans()[-40:])
                raise AssertionError(
                    f"no {what} within {timeout} s; last spans received:\n{recent}"
                )
            time.sleep(0.1)


@dataclass(frozen=True)
class Listening:
    receiver: Receiver
    endpoint: str


@contextlib.contextmanager
def serve(port: int) -> Iterator[Listening]:
    """Run a receiver on 127.0.0.1:`port` (sync gRPC, in its own threads) until closed."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound == port, f"the OTLP receiver could not bind port {port}"
    server.start()
    try:
        yield Listening(receiver, f"http://127.0.0.1:{port}")
    finally:
        server.stop(grace=None)


def ancestors(span: Span, spans: list[Span]) -> list[Span]:
    """The exported parent, grandparent, ... of `span`, nearest first."""
    by_id = {s.span_id: s for s in spans if s.trace_id == span.trace_id}
    chain: list[Span] = []
    current = by_id.get(span.parent_span_id)
    while current is not None and current.span_id not in {s.span_id for s in chain}:
        chain.append(current)
        current = by_id.get(current.parent_span_id)
    return chain
