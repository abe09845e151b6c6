"""Crash faults end a real `python -m notification_svc` with exit code 87; bad rules stop it.

notification_svc stands in for every service, as in test_observability: it
needs no database, and the fault injection under test is the shared server's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from eventbooking.fault_injection import EXIT_CODE
from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from tests.integration.shared.test_observability import (
    AS_SERVICE,
    REPO,
    free_port,
    service_env,
    wait_until_serving,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]


def start(tmp_path: Path, faults: object) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    delivered = tmp_path / "delivered.jsonl"
    env = service_env(
        NOTIFICATION_SVC_PORT=str(port),
        NOTIFICATION_SVC_HOST="127.0.0.1",
        NOTIFICATION_SVC_METRICS_PORT="0",
        NOTIFICATION_SVC_SINKS="jsonl",
        NOTIFICATION_SVC_JSONL_PATH=str(delivered),
        NOTIFICATION_SVC_FAULTS=json.dumps(faults),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "notification_svc"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return process, port, delivered


def send(port: int) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            pb_grpc.NotificationServiceStub(channel).SendNotification(
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
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("when", "lines"), [("before", 0), ("after", 1)])
def test_a_crash_rule_ends_the_process_with_87_before_or_after_the_work(
    tmp_path: Path, when: str, lines: int
) -> None:
    faults = {
        "seed": 1,
        "rules": [
            {
                "service": "notification_svc",
                "method": "SendNotification",
                "kind": "crash",
                "when": when,
                "count": 1,
            }
        ],
    }
    process, port, delivered = start(tmp_path, faults)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process)
        outcome = send(port)
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode() if process.stdout else ""

    assert code == EXIT_CODE, output
    assert outcome == grpc.StatusCode.UNAVAILABLE
    assert "crashing" in output
    sent = delivered.read_text().splitlines() if delivered.exists() else []
    assert len(sent) == lines, "after: the notification went out before the crash"


def test_bad_rules_stop_the_service_at_start_naming_the_variable_and_the_rule(
    tmp_path: Path,
) -> None:
    bad = [{"service": "notification_svc", "method": "*", "kind": "error", "code": "SOMETIMES"}]
    process, _, _ = start(tmp_path, bad)

    output, _ = process.communicate(timeout=30)

    assert process.returncode == 1
    text = output.decode()
    assert "NOTIFICATION_SVC_FAULTS:" in text
    assert "fault rule 1" in text
    assert "code must be a gRPC status code name" in text
