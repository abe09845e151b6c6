"""`python -m notification_svc` as a real process: it serves, stops on SIGTERM, refuses bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from tests.integration.notification.conftest import ADMIN_TOKEN, SERVICE_CREDENTIAL, admin, service

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[3]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name


def service_env(**variables: str) -> dict[str, str]:
    """The test's environment without any NOTIFICATION_SVC_* it had, the secrets, `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATION_SVC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["NOTIFICATION_SVC_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["NOTIFICATION_SVC_SERVICE_CREDENTIAL"] = SERVICE_CREDENTIAL
    env.update(variables)
    return env


def start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "notification_svc"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_serving(channel: grpc.Channel, process: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited before serving"
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
        except grpc.RpcError:
            time.sleep(0.1)
            continue
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    pytest.fail("the service did not become SERVING within 20 s")


def test_the_service_serves_and_exits_cleanly_on_sigterm(free_port: int, tmp_path: Path) -> None:
    log_path = tmp_path / "service.log"
    process = start(
        service_env(NOTIFICATION_SVC_PORT=str(free_port), NOTIFICATION_SVC_HOST="127.0.0.1"),
        log_path,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as channel:
            wait_until_serving(channel, process)
            overall = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            account = str(uuid.uuid4())
            reply = pb_grpc.NotificationServiceStub(channel).SendNotification(
                pb.SendNotificationRequest(
                    idempotency_key="process-test",
                    account_id=account,
                    kind=pb.NOTIFICATION_KIND_GENERAL,
                    subject="hello",
                    body="not for the log",
                ),
                metadata=service(),
                timeout=5,
            )
            # An open stream must not hold up the stop past the grace period.
            stream = pb_grpc.NotificationServiceStub(channel).StreamNotifications(
                pb.StreamNotificationsRequest(), metadata=admin()
            )
            stream.initial_metadata()

            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=15)
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log_path.read_text()
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert reply.duplicate is False
    assert code == 0, output
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "notification delivered" in output
    assert reply.notification.notification_id in output
    assert "not for the log" not in output
    assert SERVICE_CREDENTIAL not in output
    assert ADMIN_TOKEN not in output
    assert "stopped" in output


def test_a_bad_setting_exits_non_zero_naming_the_variable(tmp_path: Path, free_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "notification_svc"],
        cwd=REPO,
        env=service_env(NOTIFICATION_SVC_PORT=str(free_port), NOTIFICATION_SVC_SINKS="jsonl"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "NOTIFICATION_SVC_JSONL_PATH" in result.stderr
    assert "required when NOTIFICATION_SVC_SINKS includes jsonl" in result.stderr


def test_the_service_refuses_a_call_without_a_token(free_port: int, tmp_path: Path) -> None:
    process = start(
        service_env(NOTIFICATION_SVC_PORT=str(free_port), NOTIFICATION_SVC_HOST="127.0.0.1"),
        tmp_path / "service.log",
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as channel:
            wait_until_serving(channel, process)
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.NotificationServiceStub(channel).SendNotification(
                    pb.SendNotificationRequest(
                        idempotency_key="no-token",
                        account_id=str(uuid.uuid4()),
                        kind=pb.NOTIFICATION_KIND_GENERAL,
                        subject="hello",
                    ),
                    timeout=5,
                )
    finally:
        process.terminate()
        process.wait(timeout=15)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ADMIN_TOKEN", None, "there is no default"),
        ("SERVICE_CREDENTIAL", None, "there is no default"),
        ("ADMIN_TOKEN", "too-short", "at least 16 characters"),
    ],
)
def test_a_missing_or_weak_secret_stops_the_service_naming_its_variable(
    free_port: int, variable: str, value: str | None, message: str
) -> None:
    env = service_env(NOTIFICATION_SVC_PORT=str(free_port))
    if value is None:
        del env[f"NOTIFICATION_SVC_{variable}"]
    else:
        env[f"NOTIFICATION_SVC_{variable}"] = value
    result = subprocess.run(
        [sys.executable, "-m", "notification_svc"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert f"NOTIFICATION_SVC_{variable}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if value is not None:
        assert value not in result.stderr
