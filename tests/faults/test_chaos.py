"""`bookingctl chaos` as CI runs it: a one-minute run with a fixed seed, every fault kind on.

The command is run as a user would, as a real process: it starts its own system
(PostgreSQL and the four services), books and cancels at concurrency 8 while it
injects errors, delays, lost replies and crashes, kills services (booking_svc
among them) and restarts PostgreSQL once, then checks the seven invariants.
The test reads its JSON summary, and makes sure nothing it started outlives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventbooking.chaos import FAULT_KINDS

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

BOOKINGCTL = Path(sys.executable).parent / "bookingctl"
SEED = 7
# A minute of faults, the system's start and settling, on a slow CI machine.
RUN_TIMEOUT_SECONDS = 480


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line or environment names `text`: what a run left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline or text.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One chaos run's summary; the run's home stays in the temp folder for its logs."""
    home = tmp_path_factory.mktemp("chaos") / "home"
    command = [
        str(BOOKINGCTL),
        "chaos",
        "--duration",
        "60s",
        "--concurrency",
        "8",
        "--seed",
        str(SEED),
        "--home",
        str(home),
        "--json",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            # SIGTERM, not SIGKILL: the run stops its system on the way out.
            process.terminate()
            stdout, stderr = process.communicate(timeout=60)
            pytest.fail(f"bookingctl chaos took over {RUN_TIMEOUT_SECONDS} s:\n{stderr}")
    assert processes_mentioning(str(home)) == [], "bookingctl chaos left processes running"
    assert stdout.strip(), f"no summary; exit {process.returncode}; stderr:\n{stderr}"
    summary: dict[str, Any] = json.loads(stdout)
    summary["exit_code"] = process.returncode
    summary["stderr"] = stderr
    return summary


def test_every_invariant_holds_and_nothing_is_left_running(run: dict[str, Any]) -> None:
    failed = [r for r in run["invariants"]["invariants"] if not r["holds"]]
    assert failed == [], json.dumps(failed, indent=2)
    quiet = run["quiescence"]
    assert quiet["reached"], quiet
    assert (
        quiet["sagas_left_running"],
        quiet["sagas_stuck"],
        quiet["bookings_left_in_flight"],
    ) == (
        0,
        0,
        0,
    )
    assert run["ok"]
    assert run["exit_code"] == 0, run["stderr"]


def test_the_run_is_the_one_the_seed_names(run: dict[str, Any]) -> None:
    assert run["seed"] == SEED
    assert run["fault_kinds"] == list(FAULT_KINDS)
    assert f"chaos: seed {SEED}" in run["stderr"]


def test_bookings_ended_every_way(run: dict[str, Any]) -> None:
    outcomes = run["bookings"]["by_outcome"]
    assert outcomes["CONFIRMED"] > 0
    assert outcomes["FAILED"] > 0
    assert outcomes["CANCELLED"] > 0
    assert outcomes["PENDING"] == outcomes["CANCELLING"] == 0


def test_every_fault_kind_fired(run: dict[str, Any]) -> None:
    fired = run["faults"]["by_kind"]
    assert [kind for kind in FAULT_KINDS if fired[kind] < 1] == [], fired


def test_processes_died_came_back_and_postgres_restarted_once(run: dict[str, Any]) -> None:
    processes = run["processes"]
    assert sum(processes["crashes"].values()) >= 1
    assert processes["kills"].get("booking_svc", 0) >= 1
    assert sum(processes["restarts"].values()) >= sum(processes["crashes"].values()) + sum(
        processes["kills"].values()
    )
    assert processes["postgres_restarts"] == 1
    assert processes["unexpected_exits"] == []
