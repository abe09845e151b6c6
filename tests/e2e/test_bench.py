"""`bookingctl bench` as a user runs it: a real subprocess that starts the embedded system
(or measures a running one), drives small runs of each scenario and prints a JSON report.

The assertions are about the report's shape and invariants (every booking final, counts
that add up, exactly <capacity> confirmed under contention, nothing left running), never
about timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventbooking.local import SERVICES, admin_token_file, service_credential_file
from eventbooking.localpg import port_is_free
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e]

BOOKINGCTL = Path(sys.executable).parent / "bookingctl"
SYSTEM_PROCESSES = ("account_svc", "event_svc", "booking_svc", "notification_svc", "postgres")


def bench(*args: str, timeout: float) -> tuple[dict[str, Any], str]:
    """Run `bookingctl bench --json ...`; the report and what it wrote to stderr."""
    result = subprocess.run(
        [str(BOOKINGCTL), "bench", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report, result.stderr


def assert_nothing_left_running(report: dict[str, Any]) -> None:
    """The services' ports are free, and no process names the bench's temporary home."""
    for address in report["system"]["addresses"].values():
        port = int(address.rsplit(":", 1)[1])
        assert port_is_free(port), f"something still listens on {address}"
    home = report["system"]["home"]
    assert home, "an embedded bench reports its temporary home"
    assert not Path(home).exists(), "the temporary home was not removed"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        assert home not in text, f"left running: {text}"


@pytest.mark.timeout(420)
def test_a_small_bench_of_every_scenario_on_the_embedded_system(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    report, progress = bench(
        *("-n", "200", "--concurrency", "8", "--warmup", "5"),
        *("--scenario", "throughput", "--scenario", "contention", "--scenario", "recovery"),
        *("--contention-bookings", "100", "--contention-seats", "10"),
        *("--recovery-bookings", "40", "--json-out", str(out)),
        timeout=400,
    )
    assert json.loads(out.read_text()) == report
    assert report["ok"], report["problems"]
    assert report["problems"] == []
    assert report["system"]["kind"] == "embedded"
    # Not a terminal: progress comes as separate lines, never as carriage returns.
    assert "throughput saga c=8" in progress
    assert "\r" not in progress

    runs = report["throughput"]["runs"]
    assert [(r["mode"], r["concurrency"]) for r in runs] == [("saga", 8), ("direct", 8)]
    for run in runs:
        assert run["bookings"] == 200
        assert sum(run["outcomes"].values()) == 200
        assert run["outcomes"] == {"CONFIRMED": 200}
        assert run["latency_ms"]["count"] == 200
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p95"] <= run["latency_ms"]["p99"]
        assert run["bookings_per_s"] > 0
        assert run["all_sagas_finished"]
        per_booking = run["cpu"]["per_booking_s"]
        for name in (*SYSTEM_PROCESSES, "system_total", "bench", "otlp_sink"):
            assert per_booking[name] is not None, name
            assert per_booking[name] >= 0, name
        assert run["db_xacts_per_booking"]["total"] > 0
        assert set(run["db_xacts_per_booking"]) >= {"account", "event", "booking", "total"}
        for name in ("account_svc", "event_svc", "booking_svc", "notification_svc"):
            assert run["peak_rss_kib"][name] > 0
        assert run["peak_rss_kib"]["postgres"]["processes"] > 1
    saga, direct = runs
    assert saga["cpu"]["per_booking_s"]["booking_svc"] > 0
    assert saga["log_rows_source"] == "pg_stat_user_tables"
    assert saga["log_rows_per_booking"] > 0
    assert direct["log_rows_per_booking"] < saga["log_rows_per_booking"]
    [ratio] = report["throughput"]["ratios_saga_over_direct"]
    assert ratio["concurrency"] == 8
    assert ratio["throughput"] > 0
    assert ratio["p50"] > 0

    contention = report["contention"]
    assert contention["bookings"] == 100
    assert contention["confirmed"] == 10
    assert contention["confirmed"] + contention["failed"] == 100
    assert contention["not_final"] == 0
    assert contention["event"] == {"capacity": 10, "sold": 10, "held": 0, "available": 0}
    assert contention["nothing_charged_for_failed"]
    assert contention["charged_net_cents"] == contention["confirmed_amount_cents"]
    assert contention["latency_ms"]["p99"] is not None

    recovery = report["recovery"]
    assert recovery["accepted"] == 40
    assert recovery["all_final"]
    assert sum(recovery["outcomes"].values()) == 40
    assert recovery["kill_to_all_final_s"] is not None
    assert recovery["lease_s"] > 0

    tracing = report["tracing"]
    assert tracing["enabled"]
    assert tracing["spans_received"] > 0
    assert set(tracing["spans_by_service"]) >= {"booking_svc", "event_svc", "account_svc"}
    assert report["stuck_sagas"] == 0
    assert_nothing_left_running(report)


@pytest.mark.timeout(120)
def test_contention_alone_without_tracing() -> None:
    report, _ = bench(
        *("--scenario", "contention", "--contention-bookings", "30", "--contention-seats", "7"),
        "--no-tracing",
        timeout=100,
    )
    assert report["ok"], report["problems"]
    assert report["throughput"] is None
    assert report["recovery"] is None
    assert report["contention"]["confirmed"] == 7
    assert report["contention"]["failed"] == 23
    assert report["tracing"] == {
        "enabled": False,
        "spans_received": None,
        "export_requests": None,
        "spans_by_service": None,
    }
    assert report["system"]["otlp_endpoint"] is None
    assert_nothing_left_running(report)


@pytest.mark.timeout(120)
def test_an_external_system_gets_null_for_what_the_bench_cannot_see(system: System) -> None:
    addresses = [
        arg
        for spec in SERVICES
        for arg in (
            f"--{spec.module.removesuffix('_svc')}-address",
            f"127.0.0.1:{system[spec.module]}",
        )
    ]
    report, _ = bench(
        "--external",
        *addresses,
        *("--admin-token-file", str(admin_token_file(system.home))),
        *("--service-credential-file", str(service_credential_file(system.home))),
        *("-n", "20", "--concurrency", "4", "--warmup", "0"),
        timeout=100,
    )
    assert report["ok"], report["problems"]
    assert report["system"]["kind"] == "external"
    assert report["system"]["home"] is None
    saga, direct = report["throughput"]["runs"]
    for run in (saga, direct):
        assert run["outcomes"] == {"CONFIRMED": 20}
        assert run["cpu"] is None
        assert run["db_xacts_per_booking"] is None
        assert run["peak_rss_kib"] is None
    # Without the database, the log's rows come from the bookings' histories.
    assert saga["log_rows_source"] == "GetBookingHistory of 20 bookings"
    assert saga["log_rows_per_booking"] > 0
    assert direct["log_rows_per_booking"] is None
    assert report["peak_rss_kib"] is None
    assert report["tracing"]["enabled"] is False
