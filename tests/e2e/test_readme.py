"""Every grpcurl command in the README, run for real against the running services.

The README's ports are the defaults; the test maps them to the ports of the
system it started, and fills ACCOUNT_ID, EVENT_ID and BOOKING_ID from the
replies the way a reader copies them. The indented comment lines under a
command (`#   "status": "BOOKING_STATUS_CONFIRMED",`) show part of what it
prints, and the test checks that it does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import GRPCURL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

README = Path(__file__).parents[2] / "README.md"
DEFAULT_PORTS = {
    "account_svc": 50051,
    "event_svc": 50052,
    "booking_svc": 50053,
    "notification_svc": 50054,
}
# Which reply field a reader copies into which variable.
CAPTURES = {
    "/CreateAccount": ("ACCOUNT_ID", "account", "account_id"),
    "/CreateEvent": ("EVENT_ID", "event", "event_id"),
    "/CreateBooking": ("BOOKING_ID", "booking", "booking_id"),
}
# A comment line indented under `#` quotes the output of the command above it.
SHOWN_OUTPUT = re.compile(r"#\s{2,}(\S.*?),?$")


@dataclass(frozen=True)
class Example:
    """One grpcurl command of the README, and the lines of its output the README shows."""

    command: str
    shows: tuple[str, ...]


def readme_examples() -> list[Example]:
    """Each grpcurl command of the README's sh blocks, with continuation lines, heredoc and output."""
    examples: list[Example] = []
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
            i += 1
            shows = []
            while i < len(lines) and lines[i].startswith("#"):
                if shown := SHOWN_OUTPUT.fullmatch(lines[i]):
                    shows.append(shown.group(1))
                i += 1
            examples.append(Example("\n".join(command), tuple(shows)))
    return examples


def readme_commands() -> list[str]:
    return [example.command for example in readme_examples()]


def test_the_readme_has_the_examples_it_promises() -> None:
    methods = " ".join(readme_commands())
    for method in (
        "list",
        "describe",
        "Health/Check",
        "CreateAccount",
        "Deposit",
        "CreateEvent",
        "GetEvent",
        "CreateBooking",
        "GetBookingHistory",
        "CancelBooking",
        "ListTransactions",
    ):
        assert method in methods
    shown = " ".join(line for example in readme_examples() for line in example.shows)
    for status in ("CONFIRMED", "CANCELLED", "FAILED"):
        assert f'"status": "BOOKING_STATUS_{status}"' in shown


def test_every_readme_command_works(system: dict[str, int]) -> None:
    env = {**os.environ, "PATH": f"{GRPCURL.parent}:{os.environ['PATH']}"}
    expected_failures = 0
    for example in readme_examples():
        command = example.command
        for module, port in DEFAULT_PORTS.items():
            command = command.replace(f"localhost:{port}", f"localhost:{system[module]}")
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        for line in example.shows:
            assert line in result.stdout + result.stderr, f"{command}\n{result.stdout}"
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
    assert {"ACCOUNT_ID", "EVENT_ID", "BOOKING_ID"} <= env.keys()
