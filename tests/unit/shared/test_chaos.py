"""The pure parts of `bookingctl chaos`: the seeded schedule and workload, the tally, the
notifications taken from the sink, and the summary, all without a server."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventbooking import chaos, checker
from eventbooking.booking.v1 import booking_pb2
from eventbooking.fault_injection import EXIT_CODE, parse_rule, rule_from_proto, rule_to_proto

ALL = chaos.FAULT_KINDS
SEEDS = range(25)


def schedule(
    seed: int = 7, *, duration: float = 60, kinds: tuple[str, ...] = ALL
) -> chaos.Schedule:
    return chaos.make_schedule(seed, duration=duration, kinds=kinds)


def test_the_same_seed_makes_the_same_schedule_and_another_seed_another() -> None:
    assert schedule(7) == schedule(7)
    assert schedule(7).digest() == schedule(7).digest()
    assert len({schedule(seed).digest() for seed in SEEDS}) == len(SEEDS)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_minute_plans_every_kind_at_least_once(seed: int) -> None:
    planned = schedule(seed).planned()

    assert set(planned) == set(ALL)
    assert all(count >= 1 for count in planned.values()), planned
    assert planned["postgres"] == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_each_rule_kind_first_comes_on_the_busiest_method_of_its_service(seed: int) -> None:
    firsts: dict[str, chaos.RuleWindow] = {}
    for window in schedule(seed).windows:
        firsts.setdefault(window.rules[0].kind, window)

    assert set(firsts) == set(chaos.RULE_KINDS)
    for window in firsts.values():
        assert window.rules[0].method == chaos.METHODS[window.module][0][0]


def test_only_the_kinds_asked_for_are_planned() -> None:
    only = schedule(kinds=("delay", "kill"))

    assert only.planned() == {"delay": only.planned()["delay"], "kill": len(only.kills)}
    assert {rule.kind for w in only.windows for rule in w.rules} == {"delay"}
    assert only.outage is None
    assert schedule(kinds=()).planned() == {}
    assert not schedule(kinds=()).windows
    assert not schedule(kinds=("postgres",)).kills


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("duration", [20, 60, 300, 3600])
def test_windows_take_turns_per_service_within_the_run(seed: int, duration: float) -> None:
    plan = schedule(seed, duration=duration)
    start, end = chaos.fault_bounds(duration)

    for module in chaos.MODULES:
        mine = [w for w in plan.windows if w.module == module]
        for window in mine:
            assert start <= window.at < window.until <= end
        for earlier, later in itertools.pairwise(mine):
            assert earlier.until < later.at


@pytest.mark.parametrize("seed", SEEDS)
def test_every_rule_is_valid_aims_at_its_own_service_and_uses_retried_codes(seed: int) -> None:
    for window in schedule(seed, duration=300).windows:
        assert 1 <= len(window.rules) <= 2
        assert sum(rule.kind == "crash" for rule in window.rules) <= 1
        for index, rule in enumerate(window.rules, start=1):
            # As the settings and the FaultService would read it.
            assert parse_rule(rule.to_json(), index) == rule
            assert rule_from_proto(rule_to_proto(rule), index) == rule
            assert rule.service == window.module
            assert rule.method in dict(chaos.METHODS[window.module])
            if rule.kind == "error":
                assert rule.code in chaos.ERROR_CODES
            if rule.kind == "crash":
                assert rule.count == 1
            else:
                assert rule.probability is not None
                assert 0 < rule.probability <= 0.5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("duration", [20, 60, 300])
def test_kills_start_with_booking_svc_take_turns_and_keep_clear_of_the_outage(
    seed: int, duration: float
) -> None:
    plan = schedule(seed, duration=duration)
    outage = plan.outage
    assert outage is not None
    assert 0.3 * duration <= outage.at <= 0.6 * duration
    assert 2 <= outage.down <= 5

    if plan.kills:
        assert plan.kills[0].module == "booking_svc"
    for kill in plan.kills:
        assert kill.at + kill.down <= duration
        assert not outage.at - chaos.KILL_CLEARANCE < kill.at < outage.at + outage.down + 3
    for earlier, later in itertools.pairwise(plan.kills):
        assert earlier.at + earlier.down < later.at


def test_a_long_run_kills_every_service_and_crashes_more_than_once() -> None:
    plan = schedule(7, duration=3600)

    assert {kill.module for kill in plan.kills} == set(chaos.MODULES)
    assert plan.planned()["crash"] > 1


def test_the_schedule_json_names_every_fault() -> None:
    plan = schedule(7)
    data = json.loads(json.dumps(plan.to_json()))

    assert data["seed"] == 7
    assert data["kinds"] == list(ALL)
    assert len(data["windows"]) == len(plan.windows)
    assert len(data["kills"]) == len(plan.kills)
    assert data["postgres_outage"] == {"at": plan.outage.at, "down": plan.outage.down}  # type: ignore[union-attr]


def test_a_short_run_or_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        chaos.make_schedule(1, duration=19, kinds=ALL)
    with pytest.raises(ValueError, match="unknown fault kinds: flood"):
        chaos.make_schedule(1, duration=60, kinds=("error", "flood"))


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("all", set(ALL)),
        (" ALL ", set(ALL)),
        ("none", set()),
        ("error", {"error"}),
        ("kill, postgres,,", {"kill", "postgres"}),
    ],
)
def test_fault_kinds_are_read_from_a_list(text: str, kinds: set[str]) -> None:
    assert chaos.parse_kinds(text) == kinds


@pytest.mark.parametrize("text", ["", ",", "errors", "error,oom"])
def test_an_unknown_fault_kind_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not a fault kind"):
        chaos.parse_kinds(text)


def test_the_workload_is_seeded_and_spreads_bookings_over_many_accounts() -> None:
    plan = chaos.make_workload(7, concurrency=32, duration=300)

    assert plan == chaos.make_workload(7, concurrency=32, duration=300)
    assert plan != chaos.make_workload(8, concurrency=32, duration=300)
    # Far below booking_svc's 20 attempts per second per account, even at full speed.
    assert len(plan.balances) >= 4 * 32
    poor = [b for b in plan.balances if b < chaos.RICH_BALANCE_CENTS]
    assert 0 < len(poor) < len(plan.balances) / 2
    small = [e for e in plan.events if e.capacity <= 200]
    assert len(small) == 3
    assert max(e.capacity for e in plan.events) <= 100_000
    assert all(500 <= e.price_cents <= 3000 for e in plan.events)
    # A poor account pays for a few bookings at most.
    assert max(poor) <= 3 * max(e.price_cents for e in plan.events) * max(chaos.QUANTITIES)


def test_a_crash_counts_from_the_exit_and_a_restart_does_not_lose_what_fired() -> None:
    tally = chaos.Tally()
    window = schedule(7).windows[0]
    rules = window.rules
    tally.record_fired(0, window.module, rules, [3] * len(rules))
    # The process restarted: a later poll of the same window sees lower counts.
    tally.record_fired(0, window.module, rules, [1] * len(rules))
    tally.crashes["event_svc"] += 2
    tally.kills["booking_svc"] += 1
    tally.postgres_outages = 1

    faults = tally.faults()

    assert list(faults) == list(ALL)
    assert (faults["crash"], faults["kill"], faults["postgres"]) == (2, 1, 1)
    fired = sum(3 for rule in rules if rule.kind != "crash")
    assert sum(faults[kind] for kind in ("error", "delay", "lost_reply")) == fired
    by_module = tally.faults_by_module()
    assert by_module["event_svc"]["crash"] == 2
    assert by_module["booking_svc"]["kill"] == 1


def test_downtime_adds_up_and_coming_back_ends_a_fault() -> None:
    tally = chaos.Tally(started=0.0)
    tally.went_down("booking_svc")
    tally.went_down("booking_svc")  # the second report of the same outage changes nothing

    assert tally.down == {"booking_svc"}
    tally.came_up("booking_svc")

    assert tally.down == frozenset()
    assert tally.downtime["booking_svc"] >= 0
    assert tally.last_fault_end > 0


def test_the_progress_line_shows_time_bookings_faults_and_what_is_down() -> None:
    tally = chaos.Tally()
    tally.booked.update({"CONFIRMED": 5, "FAILED": 2})
    tally.cancelled["CANCELLED"] = 1
    tally.kills["booking_svc"] = 1
    tally.went_down("postgres")

    line = chaos.progress_line(tally, elapsed=12.5, duration=60)

    assert line.startswith("chaos 12.5s/1m00s")
    assert "bookings 7 (CONFIRMED 5, FAILED 2)" in line
    assert "cancels 1" in line
    assert "faults 1 (kill 1)" in line
    assert line.endswith("down: postgres")
    assert chaos.progress_line(tally, elapsed=70, duration=60, phase="settling").startswith(
        "chaos settling"
    )


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("reserve_seats failed: FAILED_PRECONDITION: sold out: 1 seats available", "sold_out"),
        (
            "charge_account failed: FAILED_PRECONDITION: insufficient funds: balance",
            "insufficient_funds",
        ),
        ("charge_account spent its 5 attempts: UNAVAILABLE: reply lost", "retries_spent"),
        ("confirm_seats failed: FAILED_PRECONDITION: the hold expired", "other"),
    ],
)
def test_failures_are_grouped_by_reason(reason: str, kind: str) -> None:
    assert chaos.failure_kind(reason) == kind


def _booking(status: int, reason: str = "") -> booking_pb2.Booking:
    return booking_pb2.Booking(booking_id="b", status=status, failure_reason=reason)  # type: ignore[arg-type]


def test_bookings_are_counted_by_outcome_and_failures_by_reason() -> None:
    statuses, reasons = chaos.booking_outcomes(
        [
            _booking(booking_pb2.BOOKING_STATUS_CONFIRMED),
            _booking(booking_pb2.BOOKING_STATUS_FAILED, "sold out"),
            _booking(booking_pb2.BOOKING_STATUS_FAILED, "sold out"),
            _booking(booking_pb2.BOOKING_STATUS_CANCELLED),
        ]
    )

    assert statuses == {"CONFIRMED": 1, "FAILED": 2, "CANCELLED": 1, "PENDING": 0, "CANCELLING": 0}
    assert reasons == {"sold_out": 2}


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _sink_line(notification_id: str, booking_id: str, kind: str = "BOOKING_CONFIRMED") -> str:
    return json.dumps(
        {
            "notification_id": notification_id,
            "idempotency_key": f"k-{notification_id}",
            "account_id": "acc-1",
            "booking_id": booking_id,
            "kind": kind,
            "subject": "s",
            "body": "b",
            "created_at": (NOW - timedelta(minutes=1)).isoformat(),
        }
    )


def test_notifications_are_read_from_the_sink_and_a_torn_line_is_counted(tmp_path: Path) -> None:
    sink = tmp_path / "notifications.jsonl"
    sink.write_text(_sink_line("n-1", "b-1") + "\n" + '{"notification_id": "n-2", "acc' + "\n")

    found, bad = chaos.sink_notifications(sink)

    assert [(n.notification_id, n.booking_id, n.kind) for n in found] == [
        ("n-1", "b-1", "BOOKING_CONFIRMED")
    ]
    assert found[0].created_at == NOW - timedelta(minutes=1)
    assert bad == 1
    assert chaos.sink_notifications(tmp_path / "missing.jsonl") == ([], 0)


def _snapshot(
    *, notifications: list[checker.Notification], truncated: frozenset[str] = frozenset()
) -> checker.Snapshot:
    booked = checker.Booking("b-1", "acc-1", "ev-1", 1, 500, "CONFIRMED", "key", NOW, NOW)
    return checker.Snapshot(
        taken_at=NOW,
        accounts=[checker.Account("acc-1", 500)],
        transactions=[
            checker.Txn("t-d", "acc-1", checker.Kind.DEPOSIT, 1000, "d", ""),
            checker.Txn("t-c", "acc-1", checker.Kind.CHARGE, 500, "c", "b-1"),
        ],
        events=[checker.Event("ev-1", 5, 4, 0, 1)],
        bookings=[booked],
        sagas=[checker.Saga("s-1", "booking", "b-1", "COMPLETED", "notify", "", NOW, NOW)],
        notifications=notifications,
        notifications_truncated=truncated,
    )


def test_a_notification_lost_with_a_restart_of_notification_svc_is_found_in_the_sink(
    tmp_path: Path,
) -> None:
    # The listing came back empty (notification_svc restarted): invariant 6 would fail.
    assert not checker.check(_snapshot(notifications=[])).results[5].holds
    sink = tmp_path / "notifications.jsonl"
    sink.write_text(_sink_line("n-1", "b-1") + "\n")
    delivered, _ = chaos.sink_notifications(sink)

    merged = chaos.with_delivered(_snapshot(notifications=[]), delivered)

    assert checker.check(merged, saga_grace_seconds=0).holds
    # The sink holds every delivery, so no listing that came back full still hides one.
    cut = chaos.with_delivered(_snapshot(notifications=[], truncated=frozenset({"acc-1"})), [])
    assert cut.notifications_truncated == frozenset()


def test_a_notification_both_listed_and_delivered_counts_once(tmp_path: Path) -> None:
    sink = tmp_path / "notifications.jsonl"
    sink.write_text(_sink_line("n-1", "b-1") + "\n")
    delivered, _ = chaos.sink_notifications(sink)

    merged = chaos.with_delivered(_snapshot(notifications=delivered), delivered)

    assert len(merged.notifications) == 1


def _outcome(tally: chaos.Tally) -> chaos.Outcome:
    return chaos.Outcome(
        tally,
        schedule(7),
        chaos.make_workload(7, concurrency=2, duration=60),
        faults_stopped_at=61.0,
        load_stopped_at=62.0,
        settled=chaos.Settled(reached=True, at=64.5),
        bookings=[
            _booking(booking_pb2.BOOKING_STATUS_CONFIRMED),
            _booking(booking_pb2.BOOKING_STATUS_FAILED, "insufficient funds"),
        ],
    )


def _judgement(snapshot: checker.Snapshot, **left: int) -> chaos.Judgement:
    counts = {"live_sagas": 0, "stuck_sagas": 0, "in_flight_bookings": 0} | left
    return chaos.Judgement(
        checker.check(snapshot, saga_grace_seconds=0), sink_bad_lines=0, **counts
    )


def _summary(judgement: chaos.Judgement, tally: chaos.Tally | None = None) -> chaos.SummaryJson:
    tally = tally or chaos.Tally()
    options = chaos.ChaosOptions(duration=60, concurrency=2, seed=7, kinds=frozenset(ALL))
    return chaos.summary_json(
        _outcome(tally),
        options=options,
        judgement=judgement,
        home=Path("/tmp/home"),
        home_kept=False,
    )


def test_a_clean_run_passes_and_says_so() -> None:
    tally = chaos.Tally(started=0.0)
    tally.last_fault_end = 58.0
    tally.crashes["account_svc"] = 1
    tally.client_errors[("CreateBooking", "UNAVAILABLE")] = 4
    tally.requests["CreateBooking"] = 10

    summary = _summary(
        _judgement(
            chaos.with_delivered(
                _snapshot(notifications=[]),
                [checker.Notification("n-1", "acc-1", "b-1", "BOOKING_CONFIRMED", NOW)],
            )
        ),
        tally,
    )

    assert summary["ok"]
    assert json.loads(json.dumps(summary)) == summary
    assert summary["quiescence"]["seconds_after_last_fault"] == 6.5
    assert summary["quiescence"]["seconds_after_clients_stopped"] == 2.5
    assert summary["bookings"]["by_outcome"]["CONFIRMED"] == 1
    assert summary["faults"]["by_kind"]["crash"] == 1
    assert summary["requests"]["client_errors"] == {"CreateBooking": {"UNAVAILABLE": 4}}
    lines = chaos.summary_lines(summary)
    assert lines[0] == (
        "chaos: seed 7, 1m00s at concurrency 2, faults: error, delay, lost_reply, crash, kill,"
        " postgres"
    )
    assert "  CreateBooking: 10 requests, errors UNAVAILABLE 4" in lines
    assert any(line.startswith("quiescence: 6.5s after the last fault") for line in lines)
    assert lines[-1] == "result: PASS, every invariant holds and nothing is left running"


def test_a_violation_or_anything_left_running_fails_the_run() -> None:
    broken = _summary(_judgement(_snapshot(notifications=[])))
    assert not broken["ok"]
    assert broken["invariants"]["holds"] is False
    lines = chaos.summary_lines(broken)
    assert any("[VIOLATED (1)] 6." in line for line in lines)
    assert lines[-1] == "result: FAIL"

    fine = chaos.with_delivered(
        _snapshot(notifications=[]),
        [checker.Notification("n-1", "acc-1", "b-1", "BOOKING_CONFIRMED", NOW)],
    )
    assert not _summary(_judgement(fine, stuck_sagas=1))["ok"]
    assert not _summary(_judgement(fine, in_flight_bookings=1))["ok"]


def test_an_unexpected_exit_is_noted_with_its_code() -> None:
    tally = chaos.Tally()
    tally.unexpected_exits.append(
        {"module": "event_svc", "exit_code": 1, "at_seconds": 30.0, "log_tail": "boom"}
    )
    tally.crashes["event_svc"] = 1

    summary = _summary(_judgement(_snapshot(notifications=[])), tally)

    assert any("exit code no fault asked for" in note for note in summary["notes"])
    assert "  ! event_svc exited with code 1 at 30.0s" in chaos.summary_lines(summary)
    assert EXIT_CODE == 87


def test_each_service_gets_fault_control_and_booking_svc_quick_recovery() -> None:
    env = chaos.chaos_env()

    assert set(env) == set(chaos.MODULES)
    for module, extra in env.items():
        prefix = module.upper() + "_"
        assert extra[f"{prefix}FAULT_CONTROL"] == "true"
    booking = env["booking_svc"]
    assert float(booking["BOOKING_SVC_RECOVERY_INTERVAL_SECONDS"]) <= 1
    # Some injected delays outlast a participant call's deadline.
    longest_delay = 3.0
    assert float(booking["BOOKING_SVC_STEP_DEADLINE_SECONDS"]) < longest_delay
