"""`bookingctl up` as a user runs it: start, refuse a second run, stop on Ctrl-C, keep data
and secrets."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventbooking.local import SERVICES
from eventbooking.localpg import free_port
from tests.conftest import unique_email
from tests.e2e.conftest import Grpcurl
from tests.e2e.security.certs import Authority

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BOOKINGCTL = Path(sys.executable).parent / "bookingctl"


def port_args(
    ports: dict[str, int], pg_port: int, metrics: dict[str, int] | None = None
) -> list[str]:
    """Options for these ports; metrics ports not given are 0, so tests never meet 9551..9554."""
    args = ["--pg-port", str(pg_port)]
    for module, port in ports.items():
        name = module.removesuffix("_svc")
        metrics_port = (metrics or {}).get(module, 0)
        args += [f"--{name}-port", str(port), f"--{name}-metrics-port", str(metrics_port)]
    return args


def without_otel() -> dict[str, str]:
    """This environment less any OTEL_* variable, so a test sees only what `up` sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def start_up(
    home: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run `bookingctl up --json` and wait for the line that says what runs where."""
    process = subprocess.Popen(
        [str(BOOKINGCTL), "up", "--home", str(home), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        pytest.fail(
            f"bookingctl up exited {process.returncode}: {process.stderr.read() if process.stderr else ''}"
        )
    return process, json.loads(line)


def start_up_text(home: Path, args: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Run `bookingctl up` for people and read what it prints until it says how to stop."""
    process = subprocess.Popen(
        [str(BOOKINGCTL), "up", "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or "stop: Ctrl-C" not in lines[-1]:
        line = process.stdout.readline()
        if not line:
            process.wait()
            pytest.fail(f"bookingctl up exited {process.returncode}: {lines}")
        lines.append(line.rstrip("\n"))
    return process, lines


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out


def service_environ(home: Path) -> dict[str, dict[str, str]]:
    """The environment each running service process was started with, by module."""
    found = {}
    for entry in json.loads((home / "up.json").read_text())["services"]:
        raw = Path(f"/proc/{entry['pid']}/environ").read_bytes()
        pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
        found[entry["module"]] = {k.decode(): v.decode() for k, _, v in pairs}
    return found


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, dict[str, int], int]:
    return tmp_path / "home", {s.module: free_port() for s in SERVICES}, free_port()


def test_up_serves_every_service_then_stops_cleanly_and_keeps_data(
    layout: tuple[Path, dict[str, int], int], grpcurl: Grpcurl
) -> None:
    home, ports, pg_port = layout
    process, where = start_up(home, port_args(ports, pg_port), env=without_otel())
    try:
        assert set(where) == {"PostgreSQL", "admin_token_file", *ports}
        environ = service_environ(home)
        for spec in SERVICES:
            assert where[spec.module]["metrics_port"] == 0
            assert environ[spec.module][f"{spec.env_prefix}METRICS_PORT"] == "0"
            assert not [k for k in environ[spec.module] if k.startswith("OTEL_")]
        for module, port in ports.items():
            listed = grpcurl.run("-plaintext", f"localhost:{port}", "list")
            assert listed.returncode == 0, listed.stderr
            assert "grpc.health.v1.Health" in listed.stdout
            assert "grpc.reflection.v1alpha.ServerReflection" in listed.stdout
            assert module.removesuffix("_svc").capitalize() in listed.stdout
        email = unique_email()
        created: Any = grpcurl.call(
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
    admin_token = (home / "secrets" / "admin_token").read_text()

    process, lines = start_up_text(home, port_args(ports, pg_port))
    try:
        account_id = created["account"]["account_id"]
        # The account's token outlives the restart: only its hash is stored, in the database.
        again: Any = grpcurl.call(
            ports["account_svc"],
            "eventbooking.account.v1.AccountService/GetAccount",
            {"account_id": account_id},
            token=created["api_token"],
        )
        assert again["account"]["email"] == email
    finally:
        interrupt(process)
    assert (home / "secrets" / "admin_token").read_text() == admin_token, "a restart made a new one"
    assert f"  admin token: {home}/secrets/admin_token (`bookingctl saga` reads it)" in lines
    assert not [line for line in lines if line.startswith("created ")]


def test_the_first_up_makes_owner_only_secrets_and_gives_services_their_paths(
    layout: tuple[Path, dict[str, int], int],
) -> None:
    home, ports, pg_port = layout
    process, lines = start_up_text(home, port_args(ports, pg_port))
    try:
        environ = service_environ(home)
        recorded = (home / "up.json").read_text()
    finally:
        interrupt(process)
    secrets_dir = home / "secrets"
    admin, credential = secrets_dir / "admin_token", secrets_dir / "service_credential"
    assert f"created admin_token and service_credential in {secrets_dir}" in lines
    assert (mode(secrets_dir), mode(admin), mode(credential)) == (0o700, 0o600, 0o600)
    secrets = [admin.read_text().strip(), credential.read_text().strip()]
    assert all(len(secret) >= 32 for secret in secrets)
    assert secrets[0] != secrets[1]
    for spec in SERVICES:
        env = environ[spec.module]
        assert env[f"{spec.env_prefix}ADMIN_TOKEN_FILE"] == str(admin)
        assert env[f"{spec.env_prefix}SERVICE_CREDENTIAL_FILE"] == str(credential)
        # The paths, never the secrets, are in each process's environment.
        assert not [k for k, v in env.items() if any(secret in v for secret in secrets)]
    for module in ("event_svc", "notification_svc", "booking_svc"):
        prefix = module.upper() + "_"
        assert environ[module][f"{prefix}ACCOUNT_ADDRESS"] == f"127.0.0.1:{ports['account_svc']}"
    printed = "\n".join(lines) + recorded
    assert not [secret for secret in secrets if secret in printed]


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


def test_up_points_every_service_at_the_otlp_endpoint_and_its_metrics_port(
    layout: tuple[Path, dict[str, int], int],
) -> None:
    home, ports, pg_port = layout
    metrics = {module: free_port() for module in ports}
    # Nothing needs to listen there: a service exports in the background and never waits on it.
    endpoint = f"http://127.0.0.1:{free_port()}"
    process, where = start_up(
        home,
        port_args(ports, pg_port, metrics),
        env={**without_otel(), "BOOKINGCTL_OTLP_ENDPOINT": endpoint},
    )
    try:
        environ = service_environ(home)
        recorded = json.loads((home / "up.json").read_text())
    finally:
        code, out = interrupt(process)
    assert code == 0, out
    assert recorded["otlp_endpoint"] == endpoint
    for spec in SERVICES:
        port = metrics[spec.module]
        assert where[spec.module]["metrics_port"] == port
        assert f"metrics :{port}" in where[spec.module]["detail"]
        env = environ[spec.module]
        assert env[f"{spec.env_prefix}METRICS_PORT"] == str(port)
        assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
            "OTEL_SERVICE_NAME": spec.module,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
    assert {s["module"]: s["metrics_port"] for s in recorded["services"]} == metrics


def test_a_busy_or_doubled_metrics_port_is_refused_before_anything_starts(
    layout: tuple[Path, dict[str, int], int],
) -> None:
    home, ports, pg_port = layout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = subprocess.run(
            [
                str(BOOKINGCTL),
                "up",
                "--home",
                str(home),
                *port_args(ports, pg_port, {"booking_svc": taken}),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"bookingctl up: port {taken} for booking_svc metrics is in use;"
        " free it or pick another with --booking-metrics-port\n"
    )
    same = free_port()
    result = subprocess.run(
        [
            str(BOOKINGCTL),
            "up",
            "--home",
            str(home),
            *port_args(ports, pg_port, {"account_svc": same, "event_svc": same}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is given to both account_svc metrics and event_svc metrics" in result.stderr
    assert "--event-metrics-port" in result.stderr
    assert not (home / "pg").exists()


def test_an_otlp_endpoint_that_is_no_url_is_a_usage_error() -> None:
    result = subprocess.run(
        [str(BOOKINGCTL), "up", "--otlp-endpoint", "localhost:4317"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "Invalid value for '--otlp-endpoint'" in result.stderr


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
        "--account-metrics-port",
        "--booking-metrics-port",
        "--notification-metrics-port",
        "--otlp-endpoint",
        "BOOKINGCTL_OTLP_ENDPOINT",
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


def test_up_runs_services_that_serve_mutual_tls_and_checks_them_over_it(
    layout: tuple[Path, dict[str, int], int], tmp_path: Path, grpcurl: Grpcurl
) -> None:
    home, ports, pg_port = layout
    authority = Authority(tmp_path / "ca")
    served = authority.issue("localhost")
    env = dict(without_otel())
    for spec in SERVICES:
        env[f"{spec.env_prefix}TLS_CERT_FILE"] = str(served.cert)
        env[f"{spec.env_prefix}TLS_KEY_FILE"] = str(served.key)
        env[f"{spec.env_prefix}TLS_CA_FILE"] = str(authority.cert)
        env[f"{spec.env_prefix}TLS_CLIENT_CA_FILE"] = str(authority.cert)

    refused = subprocess.run(
        [str(BOOKINGCTL), "up", "--home", str(home), *port_args(ports, pg_port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert refused.returncode == 1
    assert "serves TLS (ACCOUNT_SVC_TLS_CERT_FILE is set)" in refused.stderr
    assert "--tls-ca-file" in refused.stderr

    env["BOOKINGCTL_TLS_CA_FILE"] = str(authority.cert)
    env["BOOKINGCTL_TLS_CERT_FILE"] = str(served.cert)
    env["BOOKINGCTL_TLS_KEY_FILE"] = str(served.key)
    process, where = start_up(home, port_args(ports, pg_port), env=env)
    try:
        assert set(where) == {"PostgreSQL", "admin_token_file", *ports}
        tls = ["-cacert", str(authority.cert), "-cert", str(served.cert), "-key", str(served.key)]
        for port in ports.values():
            assert grpcurl.run(*tls, f"localhost:{port}", "list").returncode == 0
            assert grpcurl.run("-plaintext", f"localhost:{port}", "list").returncode != 0
    finally:
        code, _ = interrupt(process)
    assert code == 0
