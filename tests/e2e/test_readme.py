"""Every grpcurl command in the README, run for real against the running services.

The README's ports and home folder are the defaults; the test maps them to
the system it started. It fills variables the way a reader does: a line
`export TOKEN=...   # the api_token of the reply` under a command takes that
field of the command's reply, and a line `ADMIN=$(cat ...)` runs. The
indented comment lines under a command (`#   "status": "BOOKING_STATUS_CONFIRMED",`)
show part of what it prints, and the test checks that it does; `$NAME` in
them stands for the variable's value. A command whose shown output has a
`Code:` line must fail with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import GRPCURL, System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

README = Path(__file__).parents[2] / "README.md"
DEFAULT_PORTS = {
    "account_svc": 50051,
    "event_svc": 50052,
    "booking_svc": 50053,
    "notification_svc": 50054,
}
DEFAULT_HOME = "~/.local/share/eventbooking"
# A comment line indented under `#` quotes the output of the command above it.
SHOWN_OUTPUT = re.compile(r"#\s{2,}(\S.*?),?$")
# `export NAME=...   # the FIELD of the reply`: the reader copies FIELD into NAME.
CAPTURE = re.compile(r"export (\w+)=\.\.\.\s+# the (\w+) of the reply")
# `NAME=$(command)`: the reader runs it as it stands.
ASSIGNMENT = re.compile(r"(?:export )?(\w+)=\$\((.+)\)")
# What anyone may call without a token.
PUBLIC = ("list", "describe", "grpc.health.v1.Health/Check", "/CreateAccount")
BEARER = '-H "authorization: Bearer $'


@dataclass(frozen=True)
class Example:
    """One command of the README: grpcurl or an assignment, what it shows and what it sets."""

    command: str
    shows: tuple[str, ...] = ()
    # Variable name -> the reply field it takes.
    captures: tuple[tuple[str, str], ...] = ()
    assigns: str | None = None

    @property
    def method(self) -> str:
        """What grpcurl is asked to do: the word after the address (`list`, `.../Deposit`)."""
        words = self.command.split("<<EOF")[0].replace("\\\n", " ").split()
        at = next(i for i, word in enumerate(words) if word.startswith("localhost:"))
        return words[at + 1]

    @property
    def code(self) -> str | None:
        """The status code the shown output says the command fails with; None for success."""
        codes = [line.removeprefix("Code: ") for line in self.shows if line.startswith("Code: ")]
        return codes[0] if codes else None


def readme_examples() -> list[Example]:
    """Each command of the README's sh blocks, with continuation lines, heredoc and output."""
    examples: list[Example] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if assignment := ASSIGNMENT.fullmatch(lines[i]):
                examples.append(Example(lines[i], assigns=assignment.group(1)))
                i += 1
                continue
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
            shows, captures = [], []
            while i < len(lines) and (lines[i].startswith("#") or CAPTURE.match(lines[i])):
                if shown := SHOWN_OUTPUT.fullmatch(lines[i]):
                    shows.append(shown.group(1))
                elif capture := CAPTURE.match(lines[i]):
                    captures.append((capture.group(1), capture.group(2)))
                i += 1
            examples.append(Example("\n".join(command), tuple(shows), tuple(captures)))
    return examples


def grpcurl_examples() -> list[Example]:
    return [example for example in readme_examples() if example.assigns is None]


def first_fields(reply: Any) -> dict[str, Any]:
    """Each key of a JSON reply with its first value, depth first."""
    found: dict[str, Any] = {}
    for key, value in fields(reply):
        found.setdefault(key, value)
    return found


def fields(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a JSON reply, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from fields(item)


def test_the_readme_has_the_examples_it_promises() -> None:
    methods = " ".join(example.command for example in grpcurl_examples())
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
        "RotateToken",
    ):
        assert method in methods
    shown = " ".join(line for example in readme_examples() for line in example.shows)
    for status in ("CONFIRMED", "CANCELLED", "FAILED"):
        assert f'"status": "BOOKING_STATUS_{status}"' in shown
    codes = [example.code for example in readme_examples() if example.code]
    assert sorted(codes) == ["InvalidArgument", "PermissionDenied", "Unauthenticated"]
    captured = {name for example in readme_examples() for name, _ in example.captures}
    assert {"ACCOUNT_ID", "TOKEN", "EVENT_ID", "BOOKING_ID"} <= captured
    assert "ADMIN" in {example.assigns for example in readme_examples()}


def test_every_call_that_needs_a_token_shows_one() -> None:
    for example in grpcurl_examples():
        if example.code == "Unauthenticated" or example.method.endswith(PUBLIC):
            continue
        assert BEARER in example.command, f"no authorization header:\n{example.command}"
    admin_calls = [e.command for e in grpcurl_examples() if "/CreateEvent" in e.command]
    assert admin_calls
    assert all('-H "authorization: Bearer $ADMIN"' in call for call in admin_calls)


def test_every_readme_command_works(system: System) -> None:
    env = {**os.environ, "PATH": f"{GRPCURL.parent}:{os.environ['PATH']}"}
    failures = []
    for example in readme_examples():
        command = example.command.replace(DEFAULT_HOME, str(system.home))
        for module, port in DEFAULT_PORTS.items():
            command = command.replace(f"localhost:{port}", f"localhost:{system[module]}")
        if example.assigns:
            result = subprocess.run(
                ["bash", "-c", f'{command}\nprintf %s "${example.assigns}"'],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, f"{command}\n{result.stderr}"
            assert result.stdout, f"{command} set {example.assigns} to nothing"
            env[example.assigns] = result.stdout
            continue
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        for line in example.shows:
            expected = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), line)
            assert expected in result.stdout + result.stderr, f"{command}\n{result.stdout}"
        if example.code:
            failures.append(example.code)
            assert result.returncode != 0, f"{command}\n{result.stdout}"
            assert f"Code: {example.code}" in result.stderr
            continue
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        reply = first_fields(json.loads(result.stdout)) if example.captures else {}
        for name, field in example.captures:
            assert reply.get(field), f"{command}\nhas no {field}: {result.stdout}"
            env[name] = reply[field]
    assert sorted(failures) == ["InvalidArgument", "PermissionDenied", "Unauthenticated"]
    # The admin token is the one `bookingctl up` wrote; the account's token was rotated.
    assert env["ADMIN"] == system.admin_token
    assert {"ACCOUNT_ID", "TOKEN", "EVENT_ID", "BOOKING_ID", "BOB_TOKEN"} <= env.keys()
