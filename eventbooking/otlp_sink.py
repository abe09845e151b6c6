"""An OTLP/gRPC trace receiver: keeps the spans it is sent for tests, or only counts them.

It implements the collector's TraceService from the opentelemetry-proto
package, as Jaeger or an OpenTelemetry Collector would, so the services
export to it exactly as they export to those. Tests run it in-process with
`serve` and search what it kept; `bookingctl bench` runs it as a process of
its own, so that exporting costs what it costs against a real collector:

    python -m eventbooking.otlp_sink --port 4317 --stats-file sink.json

The stats file (JSON: endpoint, spans, export requests, spans per service)
is rewritten after every export; SIGTERM or Ctrl-C stops the receiver, which
writes the file a last time and prints the same JSON on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeVar

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


class SinkStats(TypedDict):
    """What a receiver has been sent so far."""

    endpoint: str
    spans: int
    export_requests: int
    spans_by_service: dict[str, int]


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


def _service_name(resource_spans: trace_pb2.ResourceSpans) -> str:
    for kv in resource_spans.resource.attributes:
        if kv.key == "service.name":
            return str(_value(kv.value))
    return ""


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts what it is sent and, with `keep`, stores it for `spans` and `wait_for`.

    With `stats_file` it rewrites that file (atomically) after every export.
    """

    def __init__(self, *, keep: bool = True, stats_file: Path | None = None) -> None:
        self._keep = keep
        self._stats_file = stats_file
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._count = 0
        self._requests = 0
        self._by_service: dict[str, int] = {}
        self.endpoint = ""

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[Span] = []
        counts: dict[str, int] = {}
        for resource_spans in request.resource_spans:
            service = _service_name(resource_spans)
            for scope_spans in resource_spans.scope_spans:
                counts[service] = counts.get(service, 0) + len(scope_spans.spans)
                if self._keep:
                    received.extend(_span(service, span) for span in scope_spans.spans)
        with self._lock:
            self._spans.extend(received)
            self._requests += 1
            for service, count in counts.items():
                self._count += count
                self._by_service[service] = self._by_service.get(service, 0) + count
            self._write_stats_locked()
        return trace_service_pb2.ExportTraceServiceResponse()

    def stats(self) -> SinkStats:
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> SinkStats:
        return SinkStats(
            endpoint=self.endpoint,
            spans=self._count,
            export_requests=self._requests,
            spans_by_service=dict(sorted(self._by_service.items())),
        )

    def write_stats(self) -> None:
        with self._lock:
            self._write_stats_locked()

    def _write_stats_locked(self) -> None:
        if self._stats_file is None:
            return
        # Readers poll the file while exports arrive: they must never see half of it.
        partial = self._stats_file.with_name(self._stats_file.name + ".tmp")
        partial.write_text(json.dumps(self._stats_locked()))
        os.replace(partial, self._stats_file)

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


def _start(receiver: Receiver, host: str, port: int) -> grpc.Server:
    """A started gRPC server of `receiver` on host:port (0: any free port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound or (port and bound != port):
        raise OSError(f"the OTLP receiver could not bind {host}:{port}")
    receiver.endpoint = f"http://{host}:{bound}"
    server.start()
    return server


@contextlib.contextmanager
def serve(port: int, *, keep: bool = True) -> Iterator[Listening]:
    """Run a receiver on 127.0.0.1:`port` (sync gRPC, in its own threads) until closed."""
    receiver = Receiver(keep=keep)
    server = _start(receiver, "127.0.0.1", port)
    try:
        yield Listening(receiver, receiver.endpoint)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Count spans on --host:--port until SIGTERM or Ctrl-C; see the module's docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m eventbooking.otlp_sink",
        description="An OTLP/gRPC trace receiver that counts the spans it is sent.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=4317, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--stats-file", type=Path, default=None, help="JSON file rewritten after every export"
    )
    args = parser.parse_args(argv)
    receiver = Receiver(keep=False, stats_file=args.stats_file)
    try:
        server = _start(receiver, args.host, args.port)
    except OSError as err:
        print(f"otlp_sink: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    receiver.write_stats()
    print(json.dumps({"listening": receiver.endpoint}), flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    receiver.write_stats()
    print(json.dumps(receiver.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
