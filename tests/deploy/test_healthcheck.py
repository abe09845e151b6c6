"""`python -m eventbooking.healthcheck` against a real in-process health service."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from eventbooking import healthcheck
from eventbooking.localpg import free_port
from tests.e2e.security.certs import Authority

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def health() -> AsyncIterator[tuple[HealthServicer, str]]:
    servicer = HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    # The check blocks, and the server runs on this loop: the check gets a thread.
    code = await asyncio.to_thread(healthcheck.main, argv)
    out, err = capsys.readouterr()
    assert (out + err).count("\n") == 1, "one line, whatever the outcome"
    return code, out + err


async def test_serving_exits_0(
    health: tuple[HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = health
    await servicer.set("", SERVING)
    code, line = await run([address], capsys)
    assert code == 0
    assert line == f"HEALTHY {address}: SERVING\n"


async def test_not_serving_exits_1(
    health: tuple[HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # What a service reports while its migrations run.
    servicer, address = health
    await servicer.set("", NOT_SERVING)
    code, line = await run([address], capsys)
    assert code == 1
    assert line == f"UNHEALTHY {address}: NOT_SERVING\n"


async def test_a_named_service_is_checked_alone(
    health: tuple[HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = health
    await servicer.set("", SERVING)
    await servicer.set("eventbooking.booking.v1.BookingService", NOT_SERVING)
    code, line = await run([address, "--service", "eventbooking.booking.v1.BookingService"], capsys)
    assert code == 1
    assert "NOT_SERVING" in line
    code, line = await run([address, "--service", "no.such.Service"], capsys)
    assert code == 1
    assert "NOT_FOUND" in line


async def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, line = await run([address, "--timeout", "1"], capsys)
    assert code == 1
    assert line.startswith(f"UNHEALTHY {address}: UNAVAILABLE")


async def test_a_missing_ca_file_exits_1_naming_the_problem(
    health: tuple[HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = health
    code, line = await run([address, "--tls-ca-file", "/nonexistent/ca.pem"], capsys)
    assert code == 1
    assert "cannot read TLS files" in line


async def test_mutual_tls_needs_the_client_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = Authority(tmp_path)
    issued = ca.issue("localhost")
    servicer = HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(issued.key.read_bytes(), issued.cert.read_bytes())],
        root_certificates=ca.cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        await servicer.set("", SERVING)
        address = f"localhost:{port}"
        tls = ["--tls-ca-file", str(ca.cert)]
        client = ["--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key)]
        code, line = await run([address, *tls, *client], capsys)
        assert (code, line) == (0, f"HEALTHY {address}: SERVING\n")
        code, line = await run([address, *tls, "--timeout", "2"], capsys)
        assert code == 1
        assert line.startswith(f"UNHEALTHY {address}: UNAVAILABLE")
    finally:
        await server.stop(None)


def test_the_module_runs_from_the_command_line() -> None:
    # What a compose healthcheck runs; nothing listens on that port.
    result = subprocess.run(
        [sys.executable, "-m", "eventbooking.healthcheck", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("UNHEALTHY")
    assert "Traceback" not in result.stderr


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(SystemExit) as exit_:
        healthcheck.parse_args(["x:1", "--tls-ca-file", "ca", "--tls-cert-file", "c"])
    assert exit_.value.code == 2
