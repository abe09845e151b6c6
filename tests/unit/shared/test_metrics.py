"""RPC metrics on a real grpc.aio server: counts by final status code, latencies, the endpoint."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1._async import HealthServicer
from prometheus_client import REGISTRY, CollectorRegistry

from eventbooking import metrics
from eventbooking.interceptors import ErrorInterceptor
from eventbooking.localpg import free_port
from eventbooking.metrics import RpcMetrics
from eventbooking.server import create_server
from eventbooking.settings import ServiceSettings
from tests.unit.shared.conftest import PROBE, Probe, StartProbe, probe_service

pytestmark = pytest.mark.timeout(30)

OK, FAILED = grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION


def count(registry: CollectorRegistry, method: str, code: str, service: str = PROBE) -> float:
    value = registry.get_sample_value(
        "eventbooking_rpc_requests_total", {"service": service, "method": method, "code": code}
    )
    return value or 0.0


def timed(registry: CollectorRegistry, method: str, service: str = PROBE) -> float:
    value = registry.get_sample_value(
        "eventbooking_rpc_duration_seconds_count", {"service": service, "method": method}
    )
    return value or 0.0


async def test_unary_calls_are_counted_by_the_status_the_error_interceptor_answered(
    start_probe: StartProbe,
) -> None:
    registry = CollectorRegistry()
    probe = await start_probe([RpcMetrics(registry), ErrorInterceptor()])

    outcomes = [await probe.echo(r) for r in (b"ok", b"ok", b"domain", b"bug", b"abort")]
    assert await probe.echo(b"set-code") == grpc.StatusCode.ALREADY_EXISTS

    assert outcomes == [OK, OK, FAILED, grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND]
    assert count(registry, "Echo", "OK") == 2
    assert count(registry, "Echo", "FAILED_PRECONDITION") == 1
    assert count(registry, "Echo", "INTERNAL") == 1
    assert count(registry, "Echo", "NOT_FOUND") == 1
    assert count(registry, "Echo", "ALREADY_EXISTS") == 1
    assert timed(registry, "Echo") == 6


async def test_server_streams_are_counted_once_when_they_end_or_fail_midway(
    start_probe: StartProbe,
) -> None:
    registry = CollectorRegistry()
    probe = await start_probe([RpcMetrics(registry), ErrorInterceptor()])

    assert await probe.stream(b"ok") == OK
    assert await probe.stream(b"domain") == FAILED
    assert await probe.stream(b"abort") == grpc.StatusCode.NOT_FOUND

    assert count(registry, "Stream", "OK") == 1
    assert count(registry, "Stream", "FAILED_PRECONDITION") == 1
    assert count(registry, "Stream", "NOT_FOUND") == 1
    assert timed(registry, "Stream") == 3
    assert count(registry, "Echo", "OK") == 0


async def test_without_error_mapping_an_exception_counts_as_unknown_like_grpc_answers_it(
    start_probe: StartProbe,
) -> None:
    registry = CollectorRegistry()
    probe = await start_probe([RpcMetrics(registry)])

    assert await probe.echo(b"bug") == grpc.StatusCode.UNKNOWN
    assert await probe.stream(b"bug") == grpc.StatusCode.UNKNOWN

    assert count(registry, "Echo", "UNKNOWN") == 1
    assert count(registry, "Stream", "UNKNOWN") == 1


async def test_a_call_past_its_deadline_counts_as_deadline_exceeded(
    start_probe: StartProbe,
) -> None:
    registry = CollectorRegistry()
    probe = await start_probe([RpcMetrics(registry), ErrorInterceptor()])

    assert await probe.echo(b"slow", deadline=0.2) == grpc.StatusCode.DEADLINE_EXCEEDED

    # The server learns of the deadline on its own schedule; wait for the count.
    for _ in range(50):
        if count(registry, "Echo", "DEADLINE_EXCEEDED"):
            break
        await probe.echo(b"ok")
    assert count(registry, "Echo", "DEADLINE_EXCEEDED") == 1


async def test_two_interceptors_on_one_registry_share_its_metrics(
    start_probe: StartProbe,
) -> None:
    registry = CollectorRegistry()
    first = await start_probe([RpcMetrics(registry)])
    second = await start_probe([RpcMetrics(registry)])

    await first.echo(b"ok")
    await second.echo(b"ok")

    assert count(registry, "Echo", "OK") == 2


async def test_create_server_maps_errors_before_the_metrics_and_counts_health_checks() -> None:
    # The default registry: create_server takes none; a unique service name isolates the test.
    settings = ServiceSettings(
        service_name="probe_svc",
        host="127.0.0.1",
        port=0,
        admin_token="admin-token-for-tests-only",
        service_credential="service-credential-for-tests",
    )
    server, port = create_server(settings, [probe_service()], health=HealthServicer())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            probe = Probe(channel)
            health_before = count(REGISTRY, "Check", "OK", service="grpc.health.v1.Health")
            before = {c: count(REGISTRY, "Echo", c) for c in ("OK", "FAILED_PRECONDITION")}
            internal_before = count(REGISTRY, "Stream", "INTERNAL")

            assert await probe.echo(b"ok") == OK
            assert await probe.echo(b"domain") == FAILED
            assert await probe.stream(b"bug") == grpc.StatusCode.INTERNAL
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
    finally:
        await server.stop(None)

    assert count(REGISTRY, "Echo", "OK") == before["OK"] + 1
    assert count(REGISTRY, "Echo", "FAILED_PRECONDITION") == before["FAILED_PRECONDITION"] + 1
    assert count(REGISTRY, "Stream", "INTERNAL") == internal_before + 1
    health = count(REGISTRY, "Check", "OK", service="grpc.health.v1.Health")
    assert health == health_before + 1


def test_the_endpoint_serves_the_registry_in_prometheus_text() -> None:
    registry = CollectorRegistry()
    RpcMetrics(registry)._metrics.requests.labels(PROBE, "Echo", "OK").inc()
    port = free_port()

    metrics.serve(port, "127.0.0.1", registry=registry)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert f'eventbooking_rpc_requests_total{{code="OK",method="Echo",service="{PROBE}"}} 1.0' in (
        text
    )
    assert "# TYPE eventbooking_rpc_duration_seconds histogram" in text


def test_port_zero_serves_nothing_and_a_busy_port_raises() -> None:
    metrics.serve(0, "127.0.0.1", registry=CollectorRegistry())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match="in use"):
            metrics.serve(busy.getsockname()[1], "127.0.0.1", registry=CollectorRegistry())


def test_the_settings_of_every_service_name_it_and_its_metrics_port() -> None:
    from account_svc.settings import Settings as Account
    from booking_svc.settings import Settings as Booking
    from event_svc.settings import Settings as Event
    from notification_svc.settings import Settings as Notification

    url = f"postgresql://u:p@localhost/{uuid.uuid4().hex}"
    secrets = {
        "admin_token": "admin-token-for-tests-only",
        "service_credential": "service-credential-for-tests",
    }
    found = {
        (s.service_name, s.metrics_port)
        for s in (
            Account(database_url=url, **secrets),
            Event(database_url=url, **secrets),
            Booking(database_url=url, **secrets),
            Notification(**secrets),
        )
    }
    assert found == {
        ("account_svc", 9551),
        ("event_svc", 9552),
        ("booking_svc", 9553),
        ("notification_svc", 9554),
    }
