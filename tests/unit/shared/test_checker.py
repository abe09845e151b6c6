"""The checker's rules on hand-made data: a healthy world holds, and each kind of
breakage is reported under its invariant with the ids involved."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from eventbooking.checker import (
    NOTIFICATION_MEMORY_NOTE,
    Account,
    Booking,
    Event,
    Kind,
    Notification,
    Report,
    Saga,
    Snapshot,
    Txn,
    check,
    report_json,
    report_lines,
    restrict,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=10)


def booking(booking_id: str, status: str, *, quantity: int = 2, account: str = "acc-1") -> Booking:
    return Booking(
        booking_id=booking_id,
        account_id=account,
        event_id="ev-1",
        quantity=quantity,
        amount_cents=quantity * 500,
        status=status,
        idempotency_key=f"key-{booking_id}",
        created_at=EARLIER,
        updated_at=EARLIER,
    )


def txn(txn_id: str, kind: Kind, cents: int, *, key: str = "", ref: str = "") -> Txn:
    return Txn(txn_id, "acc-1", kind, cents, key, ref)


def saga(saga_id: str, booking_id: str, status: str = "COMPLETED", *, age: float = 600) -> Saga:
    at = NOW - timedelta(seconds=age)
    return Saga(saga_id, "booking", booking_id, status, "notify", "", at, at)


def confirmed_note(booking_id: str, *, at: datetime = EARLIER) -> Notification:
    return Notification(f"n-{booking_id}", "acc-1", booking_id, "BOOKING_CONFIRMED", at)


@pytest.fixture
def world() -> Snapshot:
    """One event of 10 seats; a CONFIRMED booking of 2, a FAILED one that was charged and
    refunded, a CANCELLED one likewise; 1000 deposited, 1000 charged net of 1000 refunded."""
    return Snapshot(
        taken_at=NOW,
        accounts=[Account("acc-1", 9000)],
        transactions=[
            txn("t-dep", Kind.DEPOSIT, 10_000, key="d"),
            txn("t-c1", Kind.CHARGE, 1000, key="c-ok", ref="b-ok"),
            txn("t-c2", Kind.CHARGE, 1000, key="c-fail", ref="b-fail"),
            txn("t-r2", Kind.REFUND, 1000, key="c-fail", ref="refused"),
            txn("t-c3", Kind.CHARGE, 1000, key="c-cxl", ref="b-cxl"),
            txn("t-r3", Kind.REFUND, 1000, key="c-cxl", ref="cancelled"),
        ],
        events=[Event("ev-1", capacity=10, available=8, held=0, sold=2)],
        bookings=[
            booking("b-ok", "CONFIRMED"),
            booking("b-fail", "FAILED"),
            booking("b-cxl", "CANCELLED"),
        ],
        sagas=[
            saga("s-ok", "b-ok"),
            saga("s-fail", "b-fail", "COMPENSATED"),
            saga("s-cxl", "b-cxl", "COMPLETED"),
        ],
        notifications=[confirmed_note("b-ok")],
    )


def broken(report: Report) -> dict[int, list[tuple[str, ...]]]:
    """Invariant number -> the ids of each of its violations, for the ones violated."""
    return {r.number: [v.ids for v in r.violations] for r in report.results if r.violations}


def test_a_healthy_world_holds_every_invariant(world: Snapshot) -> None:
    report = check(world)

    assert report.holds, report_lines(report)
    assert [r.number for r in report.results] == [1, 2, 3, 4, 5, 6, 7]
    assert report_lines(report)[-1] == "all 7 invariants hold"
    assert report_json(report)["holds"] is True
    assert dict(report.results[0].examined) == {"events": 1, "bookings": 3}


def test_an_oversold_event_and_counts_that_do_not_add_up(world: Snapshot) -> None:
    oversold = replace(world, events=[Event("ev-1", capacity=10, available=0, held=0, sold=11)])

    found = broken(check(oversold))

    assert set(found) == {1}
    assert ("ev-1",) in found[1]  # the sum and the oversell
    messages = [v.message for v in check(oversold).results[0].violations]
    assert any("oversold, 11 sold of 10" in m for m in messages)
    assert any("!= capacity 10" in m for m in messages)
    assert any("CONFIRMED bookings own 2" in m for m in messages)


def test_sold_seats_no_confirmed_booking_owns(world: Snapshot) -> None:
    sold_less = replace(world, events=[Event("ev-1", capacity=10, available=9, held=0, sold=1)])
    assert broken(check(sold_less)) == {1: [("ev-1", "b-ok")]}


def test_held_seats_no_booking_accounts_for(world: Snapshot) -> None:
    held = replace(world, events=[Event("ev-1", capacity=10, available=5, held=3, sold=2)])
    assert broken(check(held)) == {1: [("ev-1",)]}


def test_in_flight_bookings_may_hold_or_own_seats_without_a_violation(world: Snapshot) -> None:
    flying = replace(
        world,
        bookings=[*world.bookings, booking("b-new", "PENDING"), booking("b-going", "CANCELLING")],
        # b-new holds 2; b-going's 2 are still sold until the cancel saga releases them.
        events=[Event("ev-1", capacity=10, available=4, held=2, sold=4)],
        transactions=[
            *world.transactions,
            txn("t-c4", Kind.CHARGE, 1000, key="c-going", ref="b-going"),
        ],
        accounts=[Account("acc-1", 8000)],
        sagas=[*world.sagas, saga("s-new", "b-new", "RUNNING", age=1)],
    )
    flying = replace(
        flying,
        bookings=[
            replace(b, updated_at=NOW) if b.status in ("PENDING", "CANCELLING") else b
            for b in flying.bookings
        ],
    )

    assert check(flying).holds, report_lines(check(flying))


def test_a_double_charge_of_a_confirmed_booking(world: Snapshot) -> None:
    doubled = replace(
        world,
        transactions=[*world.transactions, txn("t-again", Kind.CHARGE, 1000, key="x", ref="b-ok")],
        accounts=[Account("acc-1", 8000)],
    )
    assert broken(check(doubled)) == {2: [("b-ok", "t-c1", "t-again")]}


def test_a_confirmed_booking_never_charged_charged_wrongly_or_refunded(world: Snapshot) -> None:
    rows = [t for t in world.transactions if t.reference != "b-ok"]
    never = replace(world, transactions=rows, accounts=[Account("acc-1", 10_000)])
    assert broken(check(never)) == {2: [("b-ok",)]}

    cheap = [*rows, txn("t-c1", Kind.CHARGE, 999, key="c-ok", ref="b-ok")]
    wrong = replace(world, transactions=cheap, accounts=[Account("acc-1", 9001)])
    assert broken(check(wrong)) == {2: [("b-ok", "t-c1")]}

    back = [*world.transactions, txn("t-back", Kind.REFUND, 1000, key="c-ok", ref="oops")]
    refunded = replace(world, transactions=back, accounts=[Account("acc-1", 10_000)])
    assert broken(check(refunded)) == {2: [("b-ok", "t-c1", "t-back")]}


def test_a_charged_failed_booking_and_an_unrefunded_cancelled_one(world: Snapshot) -> None:
    rows = [t for t in world.transactions if t.transaction_id not in ("t-r2", "t-r3")]
    charged = replace(world, transactions=rows, accounts=[Account("acc-1", 7000)])

    found = broken(check(charged))

    assert found == {3: [("b-fail", "t-c2"), ("b-cxl", "t-c3")]}


def test_a_balance_the_ledger_does_not_explain_and_a_negative_one(world: Snapshot) -> None:
    off = replace(world, accounts=[Account("acc-1", 9500), Account("acc-2", -5)])
    found = broken(check(off))
    assert found == {4: [("acc-1",), ("acc-2",), ("acc-2",)]}


def test_stuck_and_overdue_sagas_and_bookings_are_named_with_their_age(world: Snapshot) -> None:
    stuck = replace(
        world,
        bookings=[*world.bookings, booking("b-late", "PENDING"), booking("b-new", "PENDING")],
        events=[Event("ev-1", capacity=10, available=4, held=4, sold=2)],
        sagas=[
            *world.sagas,
            replace(saga("s-stuck", "b-cxl", "STUCK"), note="refund kept failing"),
            saga("s-late", "b-late", "RUNNING", age=300),
            saga("s-new", "b-new", "COMPENSATING", age=5),
        ],
    )
    stuck = replace(
        stuck,
        bookings=[
            replace(b, updated_at=NOW) if b.booking_id == "b-new" else b for b in stuck.bookings
        ],
    )

    report = check(stuck, saga_grace_seconds=30)

    assert broken(report) == {5: [("s-stuck", "b-cxl"), ("s-late", "b-late"), ("b-late",)]}
    messages = [v.message for v in report.results[4].violations]
    assert "STUCK at step notify, age 10m00s: refund kept failing" in messages[0]
    assert "still RUNNING at step notify, age 5m00s" in messages[1]
    assert "1 saga(s) in flight for less than the 30s grace" in report.results[4].notes
    # With no grace at all the young saga counts too (its booking changed just now).
    assert ("s-new", "b-new") in broken(check(stuck, saga_grace_seconds=0))[5]


def test_a_confirmed_booking_without_a_notification(world: Snapshot) -> None:
    unnotified = replace(
        world,
        notifications=[Notification("n-x", "acc-1", "b-ok", "BOOKING_FAILED", EARLIER)],
    )
    report = check(unnotified)
    assert broken(report) == {6: [("b-ok", "acc-1")]}
    assert NOTIFICATION_MEMORY_NOTE in report.results[5].notes


def test_a_confirmed_booking_older_than_a_full_history_is_not_judged(world: Snapshot) -> None:
    later = NOW - timedelta(minutes=1)
    full = replace(
        world,
        notifications=[Notification("n-y", "acc-1", "b-other", "BOOKING_CONFIRMED", later)],
        notifications_truncated=frozenset({"acc-1"}),
    )
    report = check(full)
    assert report.results[5].holds
    assert any("b-ok" in note for note in report.results[5].notes)


def test_two_bookings_with_one_idempotency_key(world: Snapshot) -> None:
    twin = replace(booking("b-twin", "FAILED"), idempotency_key="key-b-ok")
    repeated = replace(world, bookings=[*world.bookings, twin])
    assert broken(check(repeated)) == {7: [("acc-1", "b-ok", "b-twin")]}


def test_the_same_key_on_two_accounts_is_fine(world: Snapshot) -> None:
    other = replace(booking("b-2", "FAILED", account="acc-2"), idempotency_key="key-b-ok")
    assert check(replace(world, bookings=[*world.bookings, other])).results[6].holds


def test_bookings_without_keys_cannot_be_judged_and_say_so(world: Snapshot) -> None:
    keyless = replace(world, bookings=[replace(b, idempotency_key="") for b in world.bookings])
    assert broken(check(keyless)) == {7: [("b-ok", "b-fail", "b-cxl")]}


def test_the_report_lists_every_violation_and_a_summary(world: Snapshot) -> None:
    bad = replace(world, accounts=[Account("acc-1", 1)], events=[Event("ev-1", 10, 0, 0, 11)])
    report = check(bad)
    lines = report_lines(report)
    assert lines[0].startswith("[VIOLATED (")
    assert any("[ids: acc-1]" in line for line in lines)
    assert lines[-1].startswith(f"{report.violation_count} violation(s) of invariant(s) 1, 4;")
    as_json = report_json(report)
    assert as_json["holds"] is False
    assert as_json["invariants"][3]["violations"][0]["ids"] == ["acc-1"]


def test_restrict_keeps_an_account_and_every_booking_of_its_events(world: Snapshot) -> None:
    stranger = booking("b-s", "CONFIRMED", account="acc-2")
    elsewhere = replace(booking("b-e", "CONFIRMED", account="acc-3"), event_id="ev-2")
    bigger = replace(
        world,
        accounts=[*world.accounts, Account("acc-2", 0), Account("acc-3", 0)],
        bookings=[*world.bookings, stranger, elsewhere],
        events=[*world.events, Event("ev-2", 5, 5, 0, 0)],
    )

    only = restrict(bigger, accounts=["acc-1"])

    assert [a.account_id for a in only.accounts] == ["acc-1"]
    assert [e.event_id for e in only.events] == ["ev-1"]
    assert {b.booking_id for b in only.bookings} == {"b-ok", "b-fail", "b-cxl", "b-s"}
