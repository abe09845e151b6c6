"""A service run as `python -m`: Prometheus metrics on its port, trace ids in its JSON logs.

notification_svc stands in for every service: it needs no database, and the
runtime under test (`eventbooking.server.main`) is the same for all four.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbooking.localpg import free_port
from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[3]
SERVICE = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name


SERVICE_CREDENTIAL = "service-credential-for-tests"
AS_SERVICE = (("authorization", f"Bearer {SERVICE_CREDENTIAL}"),)


def service_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFICATION_SVC_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # A deployment's secrets: required, with no default in code.
    env["NOTIFICATION_SVC_ADMIN_TOKEN"] = "admin-token-for-tests-only"
    env["NOTIFICATION_SVC_SERVICE_CREDENTIAL"] = SERVICE_CREDENTIAL
    env.update(variables)
    return env


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "service.log"


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def service(ports: tuple[int, int], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    port, metrics_port = ports
    env = service_env(
        NOTIFICATION_SVC_PORT=str(port),
        NOTIFICATION_SVC_HOST="127.0.0.1",
        NOTIFICATION_SVC_METRICS_PORT=str(metrics_port),
        NOTIFICATION_SVC_LOG_FORMAT="json",
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "notification_svc"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_until_serving(channel: grpc.Channel, process: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited before serving"
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
        except grpc.RpcError:
            time.sleep(0.1)
            continue
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    pytest.fail("the service did not become SERVING within 20 s")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_a_service_counts_its_rpcs_and_logs_json_with_trace_ids(
    service: subprocess.Popen[bytes], ports: tuple[int, int], log_path: Path
) -> None:
    port, metrics_port = ports
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_until_serving(channel, service)
        stub = pb_grpc.NotificationServiceStub(channel)
        for _ in range(2):
            stub.SendNotification(
                pb.SendNotificationRequest(
                    idempotency_key=f"key-{uuid.uuid4()}",
                    account_id=str(uuid.uuid4()),
                    kind=pb.NOTIFICATION_KIND_GENERAL,
                    subject="hello",
                    body="hi",
                ),
                metadata=AS_SERVICE,
                timeout=5,
            )
        with pytest.raises(grpc.RpcError) as refused:
            stub.SendNotification(pb.SendNotificationRequest(), metadata=AS_SERVICE, timeout=5)
        text = scrape(metrics_port)
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=15)

    output = log_path.read_text()
    assert code == 0, output
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    labels = f'method="SendNotification",service="{SERVICE}"'
    assert f'eventbooking_rpc_requests_total{{code="OK",{labels}}} 2.0' in text
    assert f'eventbooking_rpc_requests_total{{code="INVALID_ARGUMENT",{labels}}} 1.0' in text
    assert f"eventbooking_rpc_duration_seconds_count{{{labels}}} 3.0" in text

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    delivered = [line for line in lines if line["message"] == "notification delivered"]
    assert len(delivered) == 2, output
    for line in delivered:
        assert len(line["trace_id"]) == 32
        assert len(line["span_id"]) == 16
    assert delivered[0]["trace_id"] != delivered[1]["trace_id"], "one trace per request"
    started = next(line for line in lines if line["message"] == "tracing configured")
    assert started["service_name"] == "notification_svc"
    assert started["otlp_endpoint"] == "none"


def test_a_busy_metrics_port_stops_the_service_with_a_message(ports: tuple[int, int]) -> None:
    port, metrics_port = ports
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", metrics_port))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "-m", "notification_svc"],
            cwd=REPO,
            env=service_env(
                NOTIFICATION_SVC_PORT=str(port),
                NOTIFICATION_SVC_HOST="127.0.0.1",
                NOTIFICATION_SVC_METRICS_PORT=str(metrics_port),
            ),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{metrics_port}" in result.stderr
    assert "Traceback" not in result.stderr
