"""Tracing: W3C carriers, current ids, gRPC spans, and `setup` configured from OTEL_* only.

In-process tests use a local tracer provider with an in-memory exporter, so
that no test installs the global one; `setup` runs in a child process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from eventbooking import telemetry
from eventbooking.interceptors import ErrorInterceptor
from eventbooking.metrics import RpcMetrics
from tests.unit.shared.conftest import PROBE, StartProbe

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made, exporter
    made.shutdown()


def test_inject_then_extract_continues_the_same_trace(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer = provider[0].get_tracer("test")
    with tracer.start_as_current_span("saga") as span:
        carrier = telemetry.inject()
    started = span.get_span_context()

    parent = trace.get_current_span(telemetry.extract(carrier)).get_span_context()

    assert set(carrier) == {"traceparent"}
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        trace.format_trace_id(started.trace_id),
        trace.format_span_id(started.span_id),
    )
    assert int(flags, 16) & 1, "sampled"
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (
        started.trace_id,
        started.span_id,
        True,
    )
    with tracer.start_as_current_span("resumed", context=telemetry.extract(carrier)) as resumed:
        assert resumed.get_span_context().trace_id == started.trace_id


def test_without_a_span_the_carrier_is_empty_and_extracts_to_no_parent() -> None:
    assert telemetry.inject() == {}
    assert not trace.get_current_span(telemetry.extract({})).get_span_context().is_valid
    garbage = telemetry.extract({"traceparent": "not a traceparent"})
    assert not trace.get_current_span(garbage).get_span_context().is_valid


def test_current_ids_are_hex_inside_a_span_and_none_outside(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    assert telemetry.current_ids() == (None, None)
    with provider[0].get_tracer("test").start_as_current_span("work") as span:
        trace_id, span_id = telemetry.current_ids()
    assert trace_id == f"{span.get_span_context().trace_id:032x}"
    assert span_id == f"{span.get_span_context().span_id:016x}"
    assert telemetry.current_ids() == (None, None)


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_client_and_server_spans_form_one_trace_with_the_status_answered(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe(
        [
            *telemetry.server_interceptors(tracer_provider),
            RpcMetrics(CollectorRegistry()),
            ErrorInterceptor(),
        ],
        client_interceptors=telemetry.client_interceptors(tracer_provider),
    )

    assert await probe.echo(b"ok") == grpc.StatusCode.OK
    client, server = (
        by_kind(exporter.get_finished_spans(), SpanKind.CLIENT),
        by_kind(exporter.get_finished_spans(), SpanKind.SERVER),
    )
    assert [s.name for s in client] == [f"/{PROBE}/Echo"]
    assert [s.name for s in server] == [f"/{PROBE}/Echo"]
    assert server[0].context is not None
    assert client[0].context is not None
    assert server[0].context.trace_id == client[0].context.trace_id
    assert server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id

    exporter.clear()
    assert await probe.echo(b"domain") == grpc.StatusCode.FAILED_PRECONDITION
    assert await probe.stream(b"domain") == grpc.StatusCode.FAILED_PRECONDITION
    assert await probe.echo(b"bug") == grpc.StatusCode.INTERNAL
    failed = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    codes = [
        (s.name, (s.attributes or {})["rpc.grpc.status_code"], s.status.status_code) for s in failed
    ]
    # By the semantic conventions only server-side codes make a server span an error.
    assert codes == [
        (f"/{PROBE}/Echo", grpc.StatusCode.FAILED_PRECONDITION.value[0], StatusCode.UNSET),
        (f"/{PROBE}/Stream", grpc.StatusCode.FAILED_PRECONDITION.value[0], StatusCode.UNSET),
        (f"/{PROBE}/Echo", grpc.StatusCode.INTERNAL.value[0], StatusCode.ERROR),
    ]


async def test_a_server_span_continues_the_trace_in_the_request_metadata(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe(telemetry.server_interceptors(tracer_provider))

    with tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        metadata = tuple(telemetry.inject().items())
    await probe.channel.unary_unary(f"/{PROBE}/Echo")(b"ok", metadata=metadata, timeout=5)

    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.parent is not None
    assert server.parent.span_id == caller.get_span_context().span_id
    assert server.parent.trace_id == caller.get_span_context().trace_id


async def test_health_checks_get_no_span_unless_the_variable_says_otherwise(
    start_probe: StartProbe,
    provider: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from grpc_health.v1 import health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    tracer_provider, exporter = provider

    async def check_health(interceptors: list[Any]) -> None:
        server = grpc.aio.server(interceptors=interceptors)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
        await server.stop(None)

    monkeypatch.delenv("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", raising=False)
    await check_health(telemetry.server_interceptors(tracer_provider))
    assert exporter.get_finished_spans() == ()

    monkeypatch.setenv("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "")
    await check_health(telemetry.server_interceptors(tracer_provider))
    assert [s.name for s in exporter.get_finished_spans()] == ["/grpc.health.v1.Health/Check"]


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return by_kind(list(exporter.get_finished_spans()), SpanKind.SERVER)


def outcome(span: ReadableSpan) -> tuple[str, object, StatusCode, str | None]:
    """Name, rpc.grpc.status_code, status and its description of a server span."""
    attributes = span.attributes or {}
    return (
        span.name,
        attributes["rpc.grpc.status_code"],
        span.status.status_code,
        span.status.description,
    )


async def test_a_server_span_has_the_rpc_and_peer_attributes_and_no_status_when_ok(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe(telemetry.server_interceptors(tracer_provider))

    assert await probe.echo(b"ok") == grpc.StatusCode.OK

    (span,) = server_spans(exporter)
    attributes = dict(span.attributes or {})
    user_agent = attributes.pop("rpc.user_agent")
    port = attributes.pop("net.peer.port")
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.service": PROBE,
        "rpc.method": "Echo",
        "rpc.grpc.status_code": grpc.StatusCode.OK.value[0],
        "net.peer.ip": "127.0.0.1",
    }
    assert isinstance(user_agent, str)
    assert user_agent.startswith("grpc-python")
    assert isinstance(port, int)
    assert port > 0
    assert (span.name, span.kind, span.status.status_code) == (
        f"/{PROBE}/Echo",
        SpanKind.SERVER,
        StatusCode.UNSET,
    )
    assert span.parent is None, "a request without a traceparent starts a trace"
    assert span.events == ()


async def test_refusals_leave_the_status_unset_and_record_no_exception(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe([*telemetry.server_interceptors(tracer_provider), ErrorInterceptor()])

    assert await probe.echo(b"domain") == grpc.StatusCode.FAILED_PRECONDITION
    assert await probe.echo(b"abort") == grpc.StatusCode.NOT_FOUND
    assert await probe.echo(b"set-code") == grpc.StatusCode.ALREADY_EXISTS

    spans = server_spans(exporter)
    assert [outcome(s) for s in spans] == [
        (f"/{PROBE}/Echo", 9, StatusCode.UNSET, None),
        (f"/{PROBE}/Echo", 5, StatusCode.UNSET, None),
        (f"/{PROBE}/Echo", 6, StatusCode.UNSET, None),
    ]
    # The upstream interceptor recorded every abort's traceback, twice.
    assert [s.events for s in spans] == [(), (), ()]


async def test_server_side_failures_make_the_span_an_error_with_code_and_details(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe([*telemetry.server_interceptors(tracer_provider), ErrorInterceptor()])

    assert await probe.echo(b"unavailable") == grpc.StatusCode.UNAVAILABLE
    assert await probe.echo(b"bug") == grpc.StatusCode.INTERNAL

    unavailable, internal = server_spans(exporter)
    assert outcome(unavailable) == (
        f"/{PROBE}/Echo",
        14,
        StatusCode.ERROR,
        "UNAVAILABLE: try again",
    )
    name, code, status, description = outcome(internal)
    assert (name, code, status) == (f"/{PROBE}/Echo", 13, StatusCode.ERROR)
    assert description is not None
    assert description.startswith("INTERNAL: internal error (ref ")
    # The error interceptor logged the bug and answered with an abort: no traceback here.
    assert (unavailable.events, internal.events) == ((), ())


async def test_an_exception_no_interceptor_mapped_is_recorded_as_unknown(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe(telemetry.server_interceptors(tracer_provider))

    assert await probe.echo(b"bug") == grpc.StatusCode.UNKNOWN

    (span,) = server_spans(exporter)
    assert outcome(span) == (f"/{PROBE}/Echo", 2, StatusCode.ERROR, "UNKNOWN: ValueError: a bug")
    assert [e.name for e in span.events] == ["exception"]


async def test_a_call_past_its_deadline_is_a_deadline_exceeded_error(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe(telemetry.server_interceptors(tracer_provider))

    assert await probe.echo(b"slow", deadline=0.2) == grpc.StatusCode.DEADLINE_EXCEEDED

    # The server cancels the handler when the deadline passes, around when the client hears.
    for _ in range(100):
        if server_spans(exporter):
            break
        await asyncio.sleep(0.02)
    (span,) = server_spans(exporter)
    assert outcome(span)[1:3] == (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], StatusCode.ERROR)
    assert span.events == ()


async def test_a_unary_stream_call_gets_a_span_that_sees_how_the_stream_ended(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    probe = await start_probe([*telemetry.server_interceptors(tracer_provider), ErrorInterceptor()])

    assert await probe.stream(b"ok") == grpc.StatusCode.OK
    assert await probe.stream(b"domain") == grpc.StatusCode.FAILED_PRECONDITION
    assert await probe.stream(b"unavailable") == grpc.StatusCode.UNAVAILABLE

    spans = server_spans(exporter)
    assert [outcome(s) for s in spans] == [
        (f"/{PROBE}/Stream", 0, StatusCode.UNSET, None),
        (f"/{PROBE}/Stream", 9, StatusCode.UNSET, None),
        (f"/{PROBE}/Stream", 14, StatusCode.ERROR, "UNAVAILABLE: try again"),
    ]
    assert all((s.attributes or {})["rpc.method"] == "Stream" for s in spans)
    assert [s.events for s in spans] == [(), (), ()]


async def test_whether_a_method_is_traced_is_decided_on_its_first_call_only(
    start_probe: StartProbe, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    asked: list[str] = []

    def traced(details: grpc.HandlerCallDetails) -> bool:
        asked.append(details.method)
        return details.method.endswith("/Echo")

    tracer = tracer_provider.get_tracer("test")
    probe = await start_probe([telemetry.ServerSpans(tracer, traced)])
    for _ in range(3):
        assert await probe.echo(b"ok") == grpc.StatusCode.OK
        assert await probe.stream(b"ok") == grpc.StatusCode.OK

    assert asked == [f"/{PROBE}/Echo", f"/{PROBE}/Stream"]
    assert [s.name for s in server_spans(exporter)] == [f"/{PROBE}/Echo"] * 3


async def test_the_handler_runs_in_the_server_span_whose_parent_is_the_callers(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = provider
    seen: list[tuple[str | None, str | None]] = []

    async def ids(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append(telemetry.current_ids())
        return request

    async def stream_ids(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        seen.append(telemetry.current_ids())
        yield request

    handler = grpc.method_handlers_generic_handler(
        PROBE,
        {
            "Ids": grpc.unary_unary_rpc_method_handler(ids),
            "StreamIds": grpc.unary_stream_rpc_method_handler(stream_ids),
        },
    )
    server = grpc.aio.server(interceptors=telemetry.server_interceptors(tracer_provider))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        metadata = tuple(telemetry.inject().items())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary(f"/{PROBE}/Ids")(b"", metadata=metadata, timeout=5)
            async for _ in channel.unary_stream(f"/{PROBE}/StreamIds")(
                b"", metadata=metadata, timeout=5
            ):
                pass
    finally:
        await server.stop(None)

    spans = server_spans(exporter)
    assert [s.name for s in spans] == [f"/{PROBE}/Ids", f"/{PROBE}/StreamIds"]
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    for span, (seen_trace, seen_span) in zip(spans, seen, strict=True):
        assert span.context is not None
        assert span.parent is not None
        assert span.parent.span_id == caller.get_span_context().span_id
        assert (seen_trace, seen_span) == (trace_id, f"{span.context.span_id:016x}")


async def test_without_an_sdk_the_handler_still_continues_the_callers_trace(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """OTEL_SDK_DISABLED installs no provider; a saga still records its request's trace."""
    seen: list[tuple[str | None, str | None]] = []

    async def ids(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append(telemetry.current_ids())
        return request

    handler = grpc.method_handlers_generic_handler(
        PROBE, {"Ids": grpc.unary_unary_rpc_method_handler(ids)}
    )
    server = grpc.aio.server(interceptors=telemetry.server_interceptors(trace.NoOpTracerProvider()))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with provider[0].get_tracer("test").start_as_current_span("caller") as caller:
        metadata = tuple(telemetry.inject().items())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary(f"/{PROBE}/Ids")(b"", metadata=metadata, timeout=5)
            await channel.unary_unary(f"/{PROBE}/Ids")(b"", timeout=5)
    finally:
        await server.stop(None)

    context = caller.get_span_context()
    assert seen == [
        (f"{context.trace_id:032x}", f"{context.span_id:016x}"),
        (None, None),
    ]


# Runs `setup` in a fresh process and reports what it installed.
SETUP_REPORT = """
import json
from opentelemetry import propagate, trace
from eventbooking import telemetry

telemetry.setup("probe_svc")
first = trace.get_tracer_provider()
telemetry.setup("other_svc")
provider = trace.get_tracer_provider()
report = {"same_provider": provider is first, "sdk": hasattr(provider, "resource")}
if report["sdk"]:
    processors = provider._active_span_processor._span_processors
    report["service_name"] = provider.resource.attributes["service.name"]
    report["team"] = provider.resource.attributes.get("team")
    report["sampler"] = type(provider.sampler).__name__
    report["processors"] = [type(p).__name__ for p in processors]
    report["exporters"] = [type(getattr(p, "_batch_processor", p)._exporter).__name__ for p in processors]
    report["propagator"] = type(propagate.get_global_textmap()).__name__
with trace.get_tracer("test").start_as_current_span("work"):
    report["ids"] = telemetry.current_ids()
telemetry.shutdown()
telemetry.shutdown()
print(json.dumps(report))
"""


def run_setup(**variables: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(variables)
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", SETUP_REPORT],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_setup_without_an_endpoint_makes_spans_with_ids_but_exports_nothing() -> None:
    report = run_setup()
    assert report["same_provider"] is True
    assert report["service_name"] == "probe_svc"
    assert report["processors"] == []
    assert report["propagator"] == "TraceContextTextMapPropagator"
    ids = report["ids"]
    assert isinstance(ids, list)
    trace_id, span_id = ids
    assert len(trace_id) == 32
    assert len(span_id) == 16


def test_setup_reads_the_service_name_sampler_and_endpoint_from_otel_variables() -> None:
    report = run_setup(
        OTEL_SERVICE_NAME="booking-eu",
        OTEL_RESOURCE_ATTRIBUTES="team=tickets,service.name=ignored",
        OTEL_TRACES_SAMPLER="traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
        # Nothing listens there; shutdown gives up quickly.
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    assert report["service_name"] == "booking-eu"
    assert report["team"] == "tickets"
    assert report["sampler"] == "TraceIdRatioBased"
    assert report["processors"] == ["BatchSpanProcessor"]
    assert report["exporters"] == ["OTLPSpanExporter"]


def test_a_service_name_in_the_resource_attributes_beats_the_default() -> None:
    report = run_setup(OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes")
    assert report["service_name"] == "from-attributes"


def test_setup_does_nothing_when_the_sdk_is_disabled() -> None:
    report = run_setup(OTEL_SDK_DISABLED="true", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert report == {"same_provider": True, "sdk": False, "ids": [None, None]}
