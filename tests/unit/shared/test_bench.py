"""The pure parts of `bookingctl bench`: percentiles, CPU and memory from /proc text, the
report built from hand-made measures, and the options it refuses before starting anything."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventbooking.bench import procfs
from eventbooking.bench.client import Account, Fixtures
from eventbooking.bench.command import ConcurrencyList
from eventbooking.bench.report import (
    ContentionMeasure,
    Context,
    RecoveryMeasure,
    RunMeasure,
    build_report,
    cpu_report,
    log_rows,
    ratios,
    run_json,
    summary_lines,
    xacts_per_booking,
)
from eventbooking.bench.stats import (
    PgStats,
    Sample,
    idle_rates,
    latency_summary,
    percentile,
    progress_line,
)
from eventbooking.cli import main

TICKS = procfs.CLOCK_TICKS_PER_SECOND


# Percentiles and latencies.


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    # rank (4 - 1) * 0.99 = 2.97: 3 + 0.97 * (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)


def test_percentile_of_one_value_is_that_value_and_of_none_is_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.010, 0.020, 0.030, 0.040, 0.100])
    assert summary["count"] == 5
    assert summary["min"] == 10.0
    assert summary["max"] == 100.0
    assert summary["p50"] == 30.0
    assert summary["mean"] == 40.0


def test_latency_summary_of_nothing_is_all_none() -> None:
    summary = latency_summary([])
    assert summary["count"] == 0
    assert summary["p50"] is None
    assert summary["p99"] is None
    assert summary["mean"] is None


def test_progress_line_shows_how_far_how_fast_and_the_outcomes() -> None:
    line = progress_line(
        "throughput saga c=8",
        done=50,
        total=200,
        elapsed=2.0,
        outcomes={"CONFIRMED": 48, "FAILED": 2},
        p50_ms=12.5,
    )
    assert "50/200" in line
    assert "25.0/s" in line
    assert "p50    12.5 ms" in line
    assert "CONFIRMED 48 FAILED 2" in line
    assert "[######..................]" in line


# /proc parsing and CPU accounting.


def stat_line(
    pid: int,
    comm: str,
    *,
    ppid: int,
    utime: int,
    stime: int,
    cutime: int = 0,
    cstime: int = 0,
) -> str:
    """A /proc/<pid>/stat line with these fields and plausible others."""
    fields = [
        "S",  # 3 state
        str(ppid),  # 4
        str(pid),  # 5 pgrp
        str(pid),  # 6 session
        "0",  # 7 tty_nr
        "-1",  # 8 tpgid
        "4194560",  # 9 flags
        "1200",  # 10 minflt
        "0",  # 11 cminflt
        "3",  # 12 majflt
        "0",  # 13 cmajflt
        str(utime),  # 14
        str(stime),  # 15
        str(cutime),  # 16
        str(cstime),  # 17
        "20",  # 18 priority
        "0",  # 19 nice
        "1",  # 20 num_threads
        "0",  # 21 itrealvalue
        "12345",  # 22 starttime
    ]
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_parse_stat_reads_the_times_after_a_comm_with_spaces_and_parentheses() -> None:
    text = stat_line(42, "postgres: writer (x) y", ppid=7, utime=100, stime=20, cutime=3, cstime=4)
    stat = procfs.parse_stat(text)
    assert stat == procfs.ProcStat(pid=42, ppid=7, utime=100, stime=20, cutime=3, cstime=4)
    assert stat.own_ticks == 120
    assert stat.with_reaped_ticks == 127


def test_parse_stat_refuses_what_is_not_a_stat_line() -> None:
    with pytest.raises(ValueError, match="stat"):
        procfs.parse_stat("not a stat line")
    with pytest.raises(ValueError, match="too few"):
        procfs.parse_stat("12 (x) S 1 2 3")


def test_parse_vmhwm_reads_the_peak_in_kib() -> None:
    status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   123456 kB\nVmRSS:\t  100000 kB\n"
    assert procfs.parse_vmhwm(status) == 123456
    assert procfs.parse_vmhwm("Name:\tkthreadd\n") is None


def stats_of(*lines: str) -> dict[int, procfs.ProcStat]:
    parsed = [procfs.parse_stat(line) for line in lines]
    return {s.pid: s for s in parsed}


def test_a_tree_counts_live_descendants_and_reaped_children() -> None:
    stats = stats_of(
        stat_line(10, "postgres", ppid=1, utime=5, stime=5, cutime=30, cstime=10),
        stat_line(11, "postgres: backend", ppid=10, utime=7, stime=3),
        stat_line(12, "postgres: parallel", ppid=11, utime=1, stime=1),
        stat_line(20, "python", ppid=1, utime=500, stime=500),
    )
    assert procfs.descendants(10, stats) == [11, 12]
    assert procfs.cpu_ticks(procfs.CpuRoot(10), stats) == 50 + 10 + 2
    assert procfs.cpu_ticks(procfs.CpuRoot(10, tree=False), stats) == 10
    assert procfs.cpu_ticks(procfs.CpuRoot(99), stats) is None


def test_a_backend_that_exits_between_readings_is_counted_once_through_cutime() -> None:
    root = procfs.CpuRoot(10)
    before = stats_of(
        stat_line(10, "postgres", ppid=1, utime=100, stime=0, cutime=40),
        stat_line(11, "postgres: backend", ppid=10, utime=6, stime=2),
    )
    # The backend worked 5 more ticks, exited, and the postmaster reaped it.
    after = stats_of(stat_line(10, "postgres", ppid=1, utime=103, stime=0, cutime=40 + 13))
    start, end = procfs.cpu_ticks(root, before), procfs.cpu_ticks(root, after)
    assert start is not None
    assert end is not None
    assert end - start == 3 + 5


def write_proc(folder: Path, pid: int, stat: str, status: str = "") -> None:
    (folder / str(pid)).mkdir()
    (folder / str(pid) / "stat").write_text(stat)
    (folder / str(pid) / "status").write_text(status)


def test_cpu_seconds_reads_a_proc_folder(tmp_path: Path) -> None:
    write_proc(tmp_path, 10, stat_line(10, "postgres", ppid=1, utime=TICKS, stime=0))
    write_proc(tmp_path, 11, stat_line(11, "postgres", ppid=10, utime=TICKS, stime=TICKS))
    write_proc(tmp_path, 30, stat_line(30, "python", ppid=1, utime=TICKS // 2, stime=0))
    # Entries that are not processes, or that vanished half-read, are left out.
    (tmp_path / "self").mkdir()
    (tmp_path / "31").mkdir()
    seconds = procfs.cpu_seconds(
        {
            "postgres": procfs.CpuRoot(10),
            "booking_svc": procfs.CpuRoot(30),
            "gone": procfs.CpuRoot(77),
        },
        proc=tmp_path,
    )
    assert seconds == {"postgres": 3.0, "booking_svc": 0.5, "gone": None}


def test_peak_memory_of_a_tree(tmp_path: Path) -> None:
    write_proc(tmp_path, 10, stat_line(10, "pg", ppid=1, utime=0, stime=0), "VmHWM:\t 2048 kB\n")
    write_proc(tmp_path, 11, stat_line(11, "pg", ppid=10, utime=0, stime=0), "VmHWM:\t 4096 kB\n")
    write_proc(tmp_path, 12, stat_line(12, "pg", ppid=10, utime=0, stime=0), "VmHWM:\t 1024 kB\n")
    assert procfs.peak_rss_kib(11, tmp_path) == 4096
    assert procfs.peak_rss_kib(99, tmp_path) is None
    assert procfs.tree_peak_rss_kib(10, tmp_path) == {
        "root": 2048,
        "max_child": 4096,
        "sum": 2048 + 4096 + 1024,
        "processes": 3,
    }


def test_postmaster_pid_is_the_first_line_of_postmaster_pid(tmp_path: Path) -> None:
    assert procfs.postmaster_pid(tmp_path) is None
    (tmp_path / "postmaster.pid").write_text("4321\n/data\n1700000000\n5432\n")
    assert procfs.postmaster_pid(tmp_path) == 4321


def test_delta_is_none_for_missing_or_restarted_processes() -> None:
    before = {"a": 1.0, "b": 5.0, "c": None, "d": 2.0}
    after = {"a": 3.5, "b": 0.5, "c": 1.0}
    assert procfs.delta(before, after) == {"a": 2.5, "b": None, "c": None, "d": None}


# The report.


def samples(confirmed: int, *, latency: float = 0.05, failed: int = 0) -> list[Sample]:
    made = [
        Sample(latency, "CONFIRMED", account=i % 2, amount_cents=1000) for i in range(confirmed)
    ]
    made += [Sample(latency * 2, "FAILED", detail="sold out") for _ in range(failed)]
    return made


def pg(xacts: dict[str, int], rows: int | None, at: float) -> PgStats:
    return PgStats(xacts=xacts, log_rows=rows, at=at)


def measure(mode: str, concurrency: int = 8, *, load_s: float = 2.0) -> RunMeasure:
    return RunMeasure(
        mode=mode,
        concurrency=concurrency,
        samples=samples(100, latency=0.1 if mode == "saga" else 0.04),
        load_s=load_s,
        window_s=load_s + 0.5,
        quiet=True,
        cpu_before={"booking_svc": 10.0, "postgres": 4.0, "account_svc": 1.0, "bench": 0.0},
        cpu_after={"booking_svc": 12.0, "postgres": 5.0, "account_svc": 1.5, "bench": 0.3},
        pg_before=pg({"booking": 1000, "account": 50, "postgres": 7}, 800, at=100.0),
        pg_after=pg({"booking": 1600, "account": 250, "postgres": 9}, 1600, at=110.0),
        accounts=5,
        events=10,
    )


def test_cpu_report_divides_each_process_by_the_bookings() -> None:
    cpu = cpu_report(
        {"booking_svc": 10.0, "postgres": 4.0, "bench": 1.0},
        {"booking_svc": 12.0, "postgres": 5.0, "bench": 1.5},
        bookings=100,
        window_s=4.0,
    )
    assert cpu is not None
    assert cpu["per_booking_s"]["booking_svc"] == 0.02
    assert cpu["per_booking_s"]["postgres"] == 0.01
    # The bench's own CPU is shown but is not the system's.
    assert cpu["per_booking_s"]["system_total"] == 0.03
    assert cpu["cores_used"]["booking_svc"] == 0.5
    assert cpu_report(None, None, bookings=100, window_s=1.0) is None


def test_xacts_per_booking_leave_out_idle_work_and_the_maintenance_database() -> None:
    before = pg({"booking": 1000, "event": 10, "postgres": 5}, None, at=0.0)
    after = pg({"booking": 1500, "event": 10, "postgres": 9}, None, at=10.0)
    raw = xacts_per_booking(before, after, bookings=100)
    assert raw == {"booking": 5.0, "event": 0.0, "postgres": 0.04, "total": 5.0}
    net = xacts_per_booking(before, after, bookings=100, idle_per_s={"booking": 4.0, "event": 2.0})
    assert net == {"booking": 4.6, "event": 0.0, "postgres": 0.04, "total": 4.6}


def test_idle_rates_are_per_second_between_readings() -> None:
    before = pg({"booking": 100, "event": 0}, 0, at=5.0)
    after = pg({"booking": 140, "event": 20, "new": 3}, 0, at=15.0)
    assert idle_rates(before, after) == {"booking": 4.0, "event": 2.0}


def test_log_rows_come_from_the_database_else_from_a_history_sample() -> None:
    before, after = pg({}, 100, at=0), pg({}, 900, at=1)
    assert log_rows(before, after, (70, 10), bookings=100) == (8.0, "pg_stat_user_tables")
    assert log_rows(None, None, (70, 10), bookings=100) == (7.0, "GetBookingHistory of 10 bookings")
    assert log_rows(None, None, None, bookings=100) == (None, None)


def test_run_json_has_rate_latency_outcomes_and_costs() -> None:
    run = run_json(measure("saga"))
    assert run["bookings"] == 100
    assert run["bookings_per_s"] == 50.0
    assert run["latency_ms"]["p50"] == 100.0
    assert run["outcomes"] == {"CONFIRMED": 100}
    assert run["log_rows_per_booking"] == 8.0
    assert run["db_xacts_per_booking"]["total"] == 8.0
    assert run["cpu"]["per_booking_s"]["booking_svc"] == 0.02


def test_failed_bookings_are_counted_but_left_out_of_the_latencies() -> None:
    m = measure("saga")
    errored = [
        *m.samples[:98],
        Sample(9.0, "FAILED", detail="x"),
        Sample(30.0, "ERROR:UNAVAILABLE"),
    ]
    run = run_json(RunMeasure(**{**m.__dict__, "samples": errored}))
    assert run["outcomes"] == {"CONFIRMED": 98, "FAILED": 1, "ERROR:UNAVAILABLE": 1}
    assert run["latency_ms"]["count"] == 99
    assert run["latency_ms"]["max"] == 9000.0
    assert run["failure_reasons"] == {"FAILED: x": 1, "ERROR:UNAVAILABLE": 1}


def test_ratios_compare_saga_with_direct_at_each_concurrency() -> None:
    runs = [
        run_json(measure("saga", 8, load_s=4.0)),
        run_json(measure("direct", 8, load_s=1.0)),
        run_json(measure("saga", 32)),
    ]
    [only] = ratios(runs)
    assert only["concurrency"] == 8
    assert only["throughput"] == 0.25
    assert only["p50"] == 2.5
    assert only["cpu_per_booking"] == 1.0


def contention(*, net_charged: list[int], sold: int = 10, held: int = 0) -> ContentionMeasure:
    return ContentionMeasure(
        seats=10,
        concurrency=100,
        samples=samples(10, failed=90),
        load_s=3.0,
        quiet=True,
        capacity=10,
        sold=sold,
        held=held,
        available=10 - sold - held,
        net_charged=net_charged,
    )


def context() -> Context:
    return Context(
        config={"bookings": 100},
        system={"kind": "embedded"},
        started_at="2026-03-01T12:00:00Z",
        duration_s=12.0,
        tracing=True,
        spans={"endpoint": "x", "spans": 1234, "export_requests": 5, "spans_by_service": {}},
        stuck_sagas=0,
    )


def test_a_clean_contention_charges_exactly_the_confirmed_bookings() -> None:
    # Ten confirmed bookings alternate between accounts 0 and 1, 1000 cents each.
    report = build_report(context(), contention=contention(net_charged=[5000, 5000]))
    c = report["contention"]
    assert (c["confirmed"], c["failed"], c["not_final"]) == (10, 90, 0)
    assert c["nothing_charged_for_failed"]
    assert c["exactly_capacity_confirmed"]
    assert report["ok"], report["problems"]


def test_contention_reports_cpu_per_booking_over_its_window() -> None:
    measure = dataclasses.replace(
        contention(net_charged=[5000, 5000]),
        window_s=4.0,
        cpu_before={"booking_svc": 1.0, "event_svc": 2.0},
        cpu_after={"booking_svc": 1.2, "event_svc": 2.1},
    )

    cpu = build_report(context(), contention=measure)["contention"]["cpu"]

    assert cpu["per_booking_s"]["booking_svc"] == pytest.approx(0.002)
    assert cpu["per_booking_s"]["event_svc"] == pytest.approx(0.001)
    assert cpu["cores_used"]["booking_svc"] == pytest.approx(0.05)


def test_money_kept_for_a_failed_booking_is_a_problem() -> None:
    report = build_report(context(), contention=contention(net_charged=[6000, 5000]))
    c = report["contention"]
    assert c["charged_for_unconfirmed_cents"] == 1000
    assert c["accounts_charged_wrongly"] == 1
    assert not c["nothing_charged_for_failed"]
    assert not report["ok"]
    assert any("charged" in p for p in report["problems"])


def test_seats_left_held_or_oversold_are_problems() -> None:
    report = build_report(
        context(), contention=contention(net_charged=[5000, 5000], held=1, sold=9)
    )
    assert any("holds 1" in p for p in report["problems"])


def recovery(final: dict[str, int], *, done: float | None) -> RecoveryMeasure:
    return RecoveryMeasure(
        bookings=50,
        submitted={"PENDING": 50},
        running_at_kill=48,
        kill_to_healthy_s=2.0,
        kill_to_bookings_final_s=done,
        kill_to_final_s=done,
        final=final,
        quiet=done is not None,
        lease_s=10.0,
    )


def test_recovery_reports_times_from_the_kill_next_to_the_lease() -> None:
    report = build_report(context(), recovery=recovery({"CONFIRMED": 50}, done=3.5))
    r = report["recovery"]
    assert r["accepted"] == 50
    assert r["all_final"]
    assert r["kill_to_all_final_s"] == 3.5
    assert r["healthy_to_all_final_s"] == 1.5
    assert r["lease_s"] == 10.0
    assert report["ok"]


def test_bookings_left_pending_after_recovery_are_a_problem() -> None:
    report = build_report(context(), recovery=recovery({"CONFIRMED": 45, "PENDING": 5}, done=None))
    assert not report["recovery"]["all_final"]
    assert not report["ok"]


def test_the_whole_report_is_json_and_reads_as_a_summary() -> None:
    report = build_report(
        context(),
        runs=[measure("saga"), measure("direct")],
        contention=contention(net_charged=[5000, 5000]),
        recovery=recovery({"CONFIRMED": 50}, done=3.5),
    )
    assert json.loads(json.dumps(report)) == report
    assert report["ok"], report["problems"]
    assert report["tracing"]["spans_received"] == 1234
    assert report["throughput"]["ratios_saga_over_direct"][0]["concurrency"] == 8
    text = "\n".join(summary_lines(report))
    assert "saga/direct at c=8" in text
    assert "10 CONFIRMED, 90 FAILED" in text
    assert "lease 10 s" in text
    assert "1234 spans" in text
    assert "no problems found" in text


def test_unconfirmed_throughput_bookings_and_stuck_sagas_are_problems() -> None:
    m = measure("saga")
    failing = RunMeasure(**{**m.__dict__, "samples": samples(99, failed=1)})
    ctx = Context(**{**context().__dict__, "stuck_sagas": 2})
    report = build_report(ctx, runs=[failing])
    assert len(report["problems"]) == 2
    assert "problems:" in "\n".join(summary_lines(report))


def test_an_external_system_reports_null_for_what_it_cannot_see() -> None:
    m = measure("saga")
    blind = RunMeasure(
        **{
            **m.__dict__,
            "cpu_before": None,
            "cpu_after": None,
            "pg_before": None,
            "pg_after": None,
            "peak_rss": None,
        }
    )
    run = run_json(blind)
    assert run["cpu"] is None
    assert run["db_xacts_per_booking"] is None
    assert run["log_rows_per_booking"] is None
    assert run["peak_rss_kib"] is None
    summary_lines(build_report(context(), runs=[blind]))


# Fixtures and options.


def test_bookings_go_round_robin_over_accounts_and_events() -> None:
    accounts = [Account(f"a{i}", "t", 0) for i in range(3)]
    fixtures = Fixtures(accounts, ["e0", "e1"], 1000)
    picked = [fixtures.pick(i) for i in range(6)]
    assert [index for index, _, _ in picked] == [0, 1, 2, 0, 1, 2]
    assert [event for _, _, event in picked] == ["e0", "e1", "e0", "e1", "e0", "e1"]


def test_concurrency_lists() -> None:
    parse = ConcurrencyList().convert
    assert parse("32", None, None) == (32,)
    assert parse("1, 8,32,8,64", None, None) == (1, 8, 32, 64)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-c", "1,,8"], "empty entry"),
        (["-c", "eight"], "not a whole number"),
        (["-c", "0"], "not in 1..10000"),
        (["-n", "0"], "-n"),
        (["--mode", "fast"], "--mode"),
        (["--bookings-per-account", "41"], "41 is not in the range"),
        (["--pg-url", "postgresql://u@h/db"], "--pg-url: only with --external"),
        (["--booking-address", "h:1", "--host", "x"], "--host, --booking-address: only with"),
        (["--external", "--scenario", "recovery"], "runs only on the embedded system"),
        (["--external", "--keep-home"], "--keep-home applies to the embedded system only"),
        (["--external", "--pg-url", "mysql://h/db"], "postgresql://"),
        (["--contention-seats", "20", "--contention-bookings", "10"], "leaves no contention"),
        (["--json-out", "no-such-folder/report.json"], "no-such-folder does not exist"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
