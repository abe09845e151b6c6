"""One trace per booking, read back from a real OTLP receiver the four services export to.

A booking's trace starts at the CreateBooking server span (the test client
sends no traceparent), holds the saga's span and a span per step, and the
client and server spans of every call the saga makes to the other services;
a saga resumed after booking_svc crashed continues that same trace.
"""

from __future__ import annotations

import pytest

from booking_svc.service_layer import crash
from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import SERVICES, LocalSystem
from eventbooking.otlp_sink import Receiver, Span, ancestors
from tests.client import Client, status_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PRICE = 1500
QUANTITY = 2
CREATE_BOOKING = "/eventbooking.booking.v1.BookingService/CreateBooking"
# Each step of the booking saga, and the call it makes: (service, gRPC method).
PARTICIPANT_CALLS = {
    "reserve_seats": ("event_svc", "/eventbooking.event.v1.EventService/ReserveSeats"),
    "charge_account": ("account_svc", "/eventbooking.account.v1.AccountService/Charge"),
    "confirm_seats": ("event_svc", "/eventbooking.event.v1.EventService/ConfirmReservation"),
    "notify": (
        "notification_svc",
        "/eventbooking.notification.v1.NotificationService/SendNotification",
    ),
}
STEPS = tuple(PARTICIPANT_CALLS)
CRASH_POINT = "booking.charge_account.action.after_log"


def _saga_span(spans: list[Span], booking_id: str, *, resumed: bool = False) -> Span | None:
    found = [
        s
        for s in spans
        if s.service == "booking_svc"
        and s.name == "saga booking"
        and s.attributes.get("booking.id") == booking_id
        and bool(s.attributes.get("saga.resumed")) is resumed
    ]
    assert len(found) <= 1, [s.describe() for s in found]
    return found[0] if found else None


def _step_spans(trace: list[Span], saga_id: str) -> dict[str, list[Span]]:
    steps: dict[str, list[Span]] = {}
    for s in trace:
        if s.name.startswith("step ") and s.attributes.get("saga.id") == saga_id:
            steps.setdefault(s.name.removeprefix("step "), []).append(s)
    return steps


def _server_spans(trace: list[Span], service: str, method: str) -> list[Span]:
    return [s for s in trace if s.kind == "SERVER" and s.service == service and s.name == method]


def _under(span: Span, ancestor: Span, trace: list[Span]) -> bool:
    return ancestor.span_id in {a.span_id for a in ancestors(span, trace)}


def test_a_booking_is_one_trace_from_the_request_to_the_notification(
    receiver: Receiver, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=10, price_cents=PRICE)

    booking = client.book(account, event, quantity=QUANTITY)
    done = client.wait_done(booking.booking_id)
    assert status_name(done.status) == "CONFIRMED"

    saga = receiver.wait_for(
        lambda spans: _saga_span(spans, booking.booking_id),
        what=f"'saga booking' span for booking {booking.booking_id}",
    )
    saga_id = saga.attributes["saga.id"]

    def complete(spans: list[Span]) -> list[Span] | None:
        trace = [s for s in spans if s.trace_id == saga.trace_id]
        steps = _step_spans(trace, saga_id)
        wanted = [
            any(s.name == CREATE_BOOKING and s.kind == "SERVER" for s in trace),
            all(step in steps for step in STEPS),
            all(_server_spans(trace, *call) for call in PARTICIPANT_CALLS.values()),
        ]
        return trace if all(wanted) else None

    trace = receiver.wait_for(complete, what=f"complete trace {saga.trace_id}")

    roots = [s for s in trace if not s.parent_span_id]
    assert [(r.service, r.kind, r.name) for r in roots] == [
        ("booking_svc", "SERVER", CREATE_BOOKING)
    ], "the CreateBooking server span starts the trace and is its only root"
    request = roots[0]
    assert _under(saga, request, trace), "the saga span continues the CreateBooking request"
    assert saga.attributes["booking.id"] == booking.booking_id
    assert saga.attributes["saga.kind"] == "booking"
    assert saga.attributes["saga.status"] == "COMPLETED"
    assert saga.attributes["saga.resumed"] is False
    assert saga.links == ()

    steps = _step_spans(trace, saga_id)
    assert sorted(steps) == sorted(STEPS)
    for step, (service, method) in PARTICIPANT_CALLS.items():
        [span] = steps[step]
        assert span.service == "booking_svc"
        assert _under(span, saga, trace), f"step {step} is not inside the saga span"
        assert span.attributes["saga.id"] == saga_id
        assert span.attributes["booking.id"] == booking.booking_id
        assert span.attributes["saga.step"] == step
        assert span.attributes["saga.phase"] == "action"
        assert span.attributes["saga.attempt"] == 1
        assert span.attributes["saga.retries"] == 0
        assert span.attributes["saga.outcome"] == "succeeded"
        [served] = _server_spans(trace, service, method)
        assert _under(served, span, trace), f"{method} on {service} is not under step {step}"
        caller = ancestors(served, trace)[0]
        assert (caller.service, caller.kind, caller.name) == ("booking_svc", "CLIENT", method)

    called = {s.service for s in trace if s.kind in ("CLIENT", "SERVER")}
    assert called == {spec.module for spec in SERVICES}
    assert all(s.status != "ERROR" for s in trace), [s.describe() for s in trace]


def test_a_saga_resumed_after_a_crash_continues_the_original_trace_and_links_the_lost_run(
    live: LocalSystem, receiver: Receiver, client: Client
) -> None:
    """Same trace, and linked.

    booking_svc dies right after logging the charge; the restarted process
    resumes the saga, and the spans of the steps it runs (confirm_seats,
    notify) are in the very trace the CreateBooking request started, under a
    new `saga booking` span with saga.resumed=true that also carries a span
    link to the interrupted run's saga span.

    The crash loses the spans booking_svc had not exported yet, so the
    original trace is found through the charge account_svc served for the
    interrupted run, and the interrupted run's span ids through the saga log.
    """
    seen = receiver.trace_ids()
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=10, price_cents=PRICE)
    live.kill("booking_svc")
    live.restart("booking_svc", env={"BOOKING_SVC_CRASH_POINTS": CRASH_POINT})

    booking = client.book(account, event, quantity=QUANTITY)
    code = live.service("booking_svc").process.wait(timeout=30)
    assert code == crash.EXIT_CODE, f"booking_svc exited {code}, not at {CRASH_POINT}"
    live.restart("booking_svc")
    done = client.wait_done(booking.booking_id)
    assert status_name(done.status) == "CONFIRMED"
    assert client.charges(account) == 1

    charge_call = PARTICIPANT_CALLS["charge_account"]
    charges = receiver.wait_for(
        lambda spans: (
            [s for s in _server_spans(spans, *charge_call) if s.trace_id not in seen] or None
        ),
        what="Charge served for the interrupted run",
    )
    assert len(charges) == 1, [s.describe() for s in charges]
    original = charges[0].trace_id
    history = client.history(booking.booking_id)
    [saga_id] = {e.saga_id for e in history.entries}
    stored = client.saga(saga_id)
    assert stored.saga.trace_id == original, "the saga's stored context is not the original trace"

    resumed = receiver.wait_for(
        lambda spans: _saga_span(spans, booking.booking_id, resumed=True),
        what="resumed 'saga booking' span",
    )
    assert resumed.trace_id == original, "the resumed saga left the original trace"
    assert resumed.parent_span_id, (
        "the resumed saga span should continue the request, not be a root"
    )

    def resumed_steps(spans: list[Span]) -> list[Span] | None:
        trace = [s for s in spans if s.trace_id == original]
        steps = _step_spans(trace, saga_id)
        calls = [PARTICIPANT_CALLS[step] for step in ("confirm_seats", "notify")]
        if all(step in steps for step in ("confirm_seats", "notify")) and all(
            _server_spans(trace, *call) for call in calls
        ):
            return trace
        return None

    trace = receiver.wait_for(
        resumed_steps, what="spans of the resumed steps in the original trace"
    )
    after_crash = [s for s in trace if s.name.startswith("step ") and _under(s, resumed, trace)]
    assert sorted(s.attributes["saga.step"] for s in after_crash) == ["confirm_seats", "notify"]
    for span in after_crash:
        assert span.attributes["saga.id"] == saga_id
        assert span.attributes["booking.id"] == booking.booking_id
        assert span.attributes["saga.outcome"] == "succeeded"
        service, method = PARTICIPANT_CALLS[span.attributes["saga.step"]]
        [served] = _server_spans(trace, service, method)
        assert _under(served, span, trace), f"{method} on {service} is outside the resumed step"
    assert len(_server_spans(trace, *charge_call)) == 1, "the resumed saga charged again"
    assert resumed.attributes["saga.status"] == "COMPLETED"

    # The interrupted run's rows: the saga log rows no span of the resumed run wrote.
    resumed_run = {resumed.span_id} | {s.span_id for s in trace if _under(s, resumed, trace)}
    entries = list(stored.entries)
    lost = [e for e in entries if e.span_id not in resumed_run]
    assert lost == entries[: len(lost)], "rows of the two runs interleave"
    assert len(lost) < len(entries), "the resumed run wrote no rows"
    inside_steps = {
        e.span_id
        for e in lost
        if e.phase == booking_pb2.STEP_PHASE_ACTION and e.event == booking_pb2.STEP_EVENT_SUCCEEDED
    }
    [link] = resumed.links
    assert link.trace_id == original
    assert link.span_id == lost[-1].span_id, "the link is not to the interrupted run"
    # The interrupted run's saga span opened the saga and wrote its first row.
    assert lost[0].span_id == link.span_id
    # Both runs are children of the CreateBooking request, not of each other.
    assert resumed.parent_span_id not in (link.span_id, *resumed_run)
    assert link.span_id not in inside_steps, "the link is to an interrupted step, not its saga span"
    for child in (s for s in trace if s.parent_span_id == link.span_id):
        assert child.name.startswith("step "), f"{child.describe()} is a child of the linked span"
