"""`bookingctl up` as a user runs it: start, refuse a second run, stop on Ctrl-C, keep data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventbooking.local import SERVICES
from eventbooking.localpg import free_port
from tests.conftest import unique_email
from tests.e2e.conftest import Grpcurl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BOOKINGCTL = Path(sys.executable).parent / "bookingctl"


def port_args(ports: dict[str, int], pg_port: int) -> list[str]:
    args = ["--pg-port", str(pg_port)]
    for module, port in ports.items():
        args += [f"--{module.removesuffix('_svc')}-port", str(port)]
    return args


def start_up(home: Path, args: list[str]) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Run `bookingctl up --json` and wait for the line that says what runs where."""
    process = subprocess.Popen(
        [str(BOOKINGCTL), "up", "--home", str(home), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        pytest.fail(
            f"bookingctl up exited {process.returncode}: {process.stderr.read() if process.stderr else ''}"
        )
    return process, json.loads(line)


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, dict[str, int], int]:
    return tmp_path / "home", {s.module: free_port() for s in SERVICES}, free_port()


def test_up_serves_every_service_then_stops_cleanly_and_keeps_data(
    layout: tuple[Path, dict[str, int], int], grpcurl: Grpcurl
) -> None:
    home, ports, pg_port = layout
    process, where = start_up(home, port_args(ports, pg_port))
    try:
        assert set(where) == {"PostgreSQL", *ports}
        for module, port in ports.items():
            listed = grpcurl.run("-plaintext", f"localhost:{port}", "list")
            assert listed.returncode == 0, listed.stderr
            assert "grpc.health.v1.Health" in listed.stdout
            assert "grpc.reflection.v1alpha.ServerReflection" in listed.stdout
            assert module.removesuffix("_svc").capitalize() in listed.stdout
        email = unique_email()
        created = grpcurl.call(
            ports["account_svc"],
            "eventbooking.account.v1.AccountService/CreateAccount",
            {"email": email, "display_name": "Kept"},
        )
        pids = [entry["pid"] for entry in json.loads((home / "up.json").read_text())["services"]]
    finally:
        code, out = interrupt(process)
    assert code == 0
    assert "stopped" in out
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
        )
    assert not (home / "up.json").exists()

    process, _ = start_up(home, port_args(ports, pg_port))
    try:
        account_id = created["account"]["account_id"]
        again = grpcurl.call(
            ports["account_svc"],
            "eventbooking.account.v1.AccountService/GetAccount",
            {"account_id": account_id},
        )
        assert again["account"]["email"] == email
    finally:
        interrupt(process)


def test_a_second_up_and_a_busy_port_get_one_line_each(
    layout: tuple[Path, dict[str, int], int], tmp_path: Path
) -> None:
    home, ports, pg_port = layout
    process, _ = start_up(home, port_args(ports, pg_port))
    try:
        second = subprocess.run(
            [str(BOOKINGCTL), "up", "--home", str(home), *port_args(ports, pg_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0
        assert "already running" in second.stderr
        assert str(process.pid) in second.stderr

        elsewhere = subprocess.run(
            [
                str(BOOKINGCTL),
                "up",
                "--home",
                str(tmp_path / "other"),
                *port_args(ports, free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert elsewhere.returncode == 1
        assert elsewhere.stderr.strip().count("\n") == 0
        assert f"port {ports['account_svc']} for account_svc is in use" in elsewhere.stderr
        assert "--account-port" in elsewhere.stderr
    finally:
        code, _ = interrupt(process)
    assert code == 0


def test_up_help_lists_every_port_option() -> None:
    result = subprocess.run(
        [str(BOOKINGCTL), "up", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for option in (
        "--home",
        "--pg-port",
        "--account-port",
        "--event-port",
        "--notification-port",
        "--json",
    ):
        assert option in result.stdout


def test_a_service_that_cannot_start_is_reported(layout: tuple[Path, dict[str, int], int]) -> None:
    home, ports, pg_port = layout
    env = {**os.environ, "EVENT_SVC_LOG_LEVEL": "LOUD"}
    started = time.monotonic()
    result = subprocess.run(
        [str(BOOKINGCTL), "up", "--home", str(home), *port_args(ports, pg_port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "event_svc did not become healthy" in result.stderr
    assert "EVENT_SVC_LOG_LEVEL" in result.stderr
    assert time.monotonic() - started < 60
    assert not (home / "up.json").exists()
