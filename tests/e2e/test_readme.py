"""Every grpcurl command in the README, run for real against the running services.

The README's ports are the defaults; the test maps them to the ports of the
system it started, and fills ACCOUNT_ID and EVENT_ID from the replies the
way a reader copies them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import GRPCURL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

README = Path(__file__).parents[2] / "README.md"
DEFAULT_PORTS = {"account_svc": 50051, "event_svc": 50052, "notification_svc": 50054}
# Which reply field a reader copies into which variable.
CAPTURES = {
    "/CreateAccount": ("ACCOUNT_ID", "account", "account_id"),
    "/CreateEvent": ("EVENT_ID", "event", "event_id"),
}


def readme_commands() -> list[str]:
    """Each grpcurl command of the README's sh blocks, with its continuation lines and heredoc."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("grpcurl "):
                i += 1
                continue
            command = [lines[i]]
            while command[-1].endswith("\\"):
                i += 1
                command.append(lines[i])
            if "<<EOF" in command[-1]:
                while lines[i] != "EOF":
                    i += 1
                    command.append(lines[i])
            commands.append("\n".join(command))
            i += 1
    return commands


def test_the_readme_has_the_examples_it_promises() -> None:
    methods = " ".join(readme_commands())
    for method in (
        "CreateAccount",
        "Deposit",
        "CreateEvent",
        "ReserveSeats",
        "Charge",
        "ConfirmReservation",
        "SendNotification",
        "ListTransactions",
        "list",
    ):
        assert method in methods


def test_every_readme_command_works(system: dict[str, int]) -> None:
    env = {**os.environ, "PATH": f"{GRPCURL.parent}:{os.environ['PATH']}"}
    expected_failures = 0
    for command in readme_commands():
        for module, port in DEFAULT_PORTS.items():
            command = command.replace(f"localhost:{port}", f"localhost:{system[module]}")
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
        )
        if "not-a-uuid" in command:
            expected_failures += 1
            assert result.returncode != 0
            assert "Code: InvalidArgument" in result.stderr
            assert "account_id must be a UUID, got 'not-a-uuid'" in result.stderr
            continue
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        for method, (variable, resource, field) in CAPTURES.items():
            if method in command:
                env[variable] = json.loads(result.stdout)[resource][field]
    assert expected_failures == 1
    assert {"ACCOUNT_ID", "EVENT_ID"} <= env.keys()
