"""The OTLP sink counts spans per service, keeps them only when asked, and writes its stats
file after every export; as a process it reports where it listens and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from eventbooking.localpg import free_port
from eventbooking.otlp_sink import Receiver, serve


def export_request(service: str, names: list[str]) -> trace_service_pb2.ExportTraceServiceRequest:
    resource = resource_pb2.Resource(
        attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))
        ]
    )
    spans = [
        trace_pb2.Span(
            trace_id=bytes(16 * [1]),
            span_id=bytes([0] * 7 + [i + 1]),
            name=name,
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
        )
        for i, name in enumerate(names)
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)]
            )
        ]
    )


def test_a_counting_receiver_keeps_no_spans_and_writes_its_stats(tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    receiver = Receiver(keep=False, stats_file=stats_file)
    receiver.Export(export_request("booking_svc", ["a", "b", "c"]), None)  # type: ignore[arg-type]
    receiver.Export(export_request("event_svc", ["d"]), None)  # type: ignore[arg-type]
    assert receiver.spans() == []
    written = json.loads(stats_file.read_text())
    assert written == receiver.stats()
    assert written["spans"] == 4
    assert written["export_requests"] == 2
    assert written["spans_by_service"] == {"booking_svc": 3, "event_svc": 1}


def test_a_keeping_receiver_serves_real_exports() -> None:
    with serve(free_port()) as listening:
        with grpc.insecure_channel(listening.endpoint.removeprefix("http://")) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(export_request("account_svc", ["Charge"]), timeout=10)
        [span] = listening.receiver.spans()
        assert (span.service, span.name, span.kind) == ("account_svc", "Charge", "SERVER")
        assert listening.receiver.stats()["spans"] == 1


def test_the_sink_process_listens_counts_and_stops_on_sigterm(tmp_path: Path) -> None:
    stats_file = tmp_path / "sink.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventbooking.otlp_sink",
            "--port",
            "0",
            "--stats-file",
            str(stats_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = json.loads(process.stdout.readline())["listening"]
        with grpc.insecure_channel(endpoint.removeprefix("http://")) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(export_request("notification_svc", ["x", "y"]), timeout=10)
        deadline = time.monotonic() + 10
        while json.loads(stats_file.read_text())["spans"] != 2:
            assert time.monotonic() < deadline, "the stats file never counted the export"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        final = json.loads(process.stdout.readline())
        assert process.wait(timeout=10) == 0
        assert final["spans"] == 2
        assert final["endpoint"] == endpoint
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
