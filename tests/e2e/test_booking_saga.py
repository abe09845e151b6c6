"""The booking saga over the real processes: each outcome, and what it did to seats and money."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from eventbooking.booking.v1 import booking_pb2
from tests.client import Client, status_name
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PRICE = 2500


@pytest.fixture(scope="module")
def client(system: System) -> Iterator[Client]:
    made = Client(system.ports, system.admin_token)
    yield made
    made.close()


def test_a_booking_is_confirmed_charged_once_sold_and_notified(client: Client) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=10, price_cents=PRICE)

    done = client.wait_done(client.book(account, event, quantity=3).booking_id)

    assert status_name(done.status) == "CONFIRMED"
    assert done.amount_cents == 3 * PRICE
    assert client.charges(account) == 1
    assert client.net_charged(account) == 3 * PRICE
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (7, 0, 3)
    assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"]


def test_a_sold_out_event_fails_the_booking_without_a_charge(client: Client) -> None:
    event = client.event(capacity=3, price_cents=PRICE)
    first = client.book(client.account(balance_cents=10_000), event, quantity=2)
    assert status_name(client.wait_done(first.booking_id).status) == "CONFIRMED"
    account = client.account(balance_cents=10_000)

    done = client.wait_done(client.book(account, event, quantity=2).booking_id)

    assert status_name(done.status) == "FAILED"
    assert "sold out" in done.failure_reason
    assert client.charges(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (1, 0, 2)
    assert client.notification_kinds(account) == []


def test_insufficient_funds_fails_the_booking_and_releases_the_seats(client: Client) -> None:
    account = client.account(balance_cents=PRICE)
    event = client.event(capacity=4, price_cents=PRICE)

    done = client.wait_done(client.book(account, event, quantity=2).booking_id)

    assert status_name(done.status) == "FAILED"
    assert "insufficient funds" in done.failure_reason
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (4, 0, 0)
    history = client.history(done.booking_id)
    undone = [
        e.step
        for e in history.entries
        if e.phase == booking_pb2.STEP_PHASE_COMPENSATION
        and e.event == booking_pb2.STEP_EVENT_SUCCEEDED
    ]
    # The refused charge applied nothing, so only the seats are given back.
    assert undone == ["reserve_seats"]
    assert history.saga_status == booking_pb2.SAGA_STATUS_COMPENSATED


def test_cancelling_a_confirmed_booking_gives_seats_and_money_back_and_notifies(
    client: Client,
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=5, price_cents=PRICE)
    booking = client.wait_done(client.book(account, event, quantity=2).booking_id)
    assert status_name(booking.status) == "CONFIRMED"

    reply = client.bookings.CancelBooking(
        booking_pb2.CancelBookingRequest(booking_id=booking.booking_id, wait_for_outcome=True),
        timeout=10,
    )

    assert status_name(reply.booking.status) == "CANCELLED"
    done = client.wait_done(booking.booking_id)
    assert status_name(done.status) == "CANCELLED"
    assert client.charges(account) == 1
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (5, 0, 0)
    assert client.notification_kinds(account) == ["BOOKING_CANCELLED", "BOOKING_CONFIRMED"]
    # Cancelling again changes nothing; a failed booking has nothing to cancel.
    assert status_name(client.cancel(booking.booking_id).status) == "CANCELLED"


def test_cancelling_a_failed_booking_is_a_failed_precondition(client: Client) -> None:
    account = client.account(balance_cents=0)
    event = client.event(capacity=5, price_cents=PRICE)
    failed = client.wait_done(client.book(account, event).booking_id)

    with pytest.raises(grpc.RpcError) as refused:
        client.cancel(failed.booking_id)

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing to cancel" in (refused.value.details() or "")


def test_the_same_idempotency_key_twice_makes_one_booking(client: Client) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=5, price_cents=PRICE)
    key = f"order-{uuid.uuid4()}"

    first = client.book(account, event, quantity=1, key=key)
    second = client.book(account, event, quantity=1, key=key)
    client.wait_done(first.booking_id)
    third = client.book(account, event, quantity=1, key=key)

    assert first.booking_id == second.booking_id == third.booking_id
    assert client.charges(account) == 1
    assert client.seats(event).sold_seats == 1
    listed = client.bookings.ListBookings(
        booking_pb2.ListBookingsRequest(account_id=account), timeout=10
    )
    assert [b.booking_id for b in listed.bookings] == [first.booking_id]


def test_the_same_key_for_a_different_booking_is_refused(client: Client) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=5, price_cents=PRICE)
    key = f"order-{uuid.uuid4()}"
    client.book(account, event, quantity=1, key=key)

    with pytest.raises(grpc.RpcError) as refused:
        client.book(account, event, quantity=2, key=key)

    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert key in (refused.value.details() or "")


def test_wait_for_outcome_answers_with_the_final_status(client: Client) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=5, price_cents=PRICE)

    reply = client.bookings.CreateBooking(
        booking_pb2.CreateBookingRequest(
            account_id=account,
            event_id=event,
            quantity=1,
            idempotency_key=f"order-{uuid.uuid4()}",
            wait_for_outcome=True,
        ),
        timeout=10,
    )

    assert status_name(reply.booking.status) == "CONFIRMED"


def test_watch_streams_the_booking_until_it_is_settled(client: Client) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=5, price_cents=PRICE)
    booking = client.book(account, event)

    stream = client.bookings.WatchBooking(
        booking_pb2.WatchBookingRequest(booking_id=booking.booking_id), timeout=10
    )
    statuses = [status_name(reply.booking.status) for reply in stream]

    assert statuses[-1] == "CONFIRMED"
    assert set(statuses) <= {"PENDING", "CONFIRMED"}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (booking_pb2.CreateBookingRequest(), "account_id is required"),
        (
            booking_pb2.CreateBookingRequest(
                account_id=str(uuid.uuid4()), event_id="nope", quantity=1, idempotency_key="k"
            ),
            "event_id must be a UUID",
        ),
        (
            booking_pb2.CreateBookingRequest(
                account_id=str(uuid.uuid4()),
                event_id=str(uuid.uuid4()),
                quantity=0,
                idempotency_key="k",
            ),
            "quantity must be between 1 and 1000",
        ),
        (
            booking_pb2.CreateBookingRequest(
                account_id=str(uuid.uuid4()), event_id=str(uuid.uuid4()), quantity=1
            ),
            "idempotency_key is required",
        ),
    ],
)
def test_bad_requests_are_invalid_arguments_that_say_why(
    client: Client, request_: booking_pb2.CreateBookingRequest, message: str
) -> None:
    # These name no account of the client's, so it sends the admin token, which may book
    # for any account: what is refused is the request itself.
    with pytest.raises(grpc.RpcError) as refused:
        client.bookings.CreateBooking(request_, timeout=10)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


def test_unknown_bookings_are_not_found(client: Client) -> None:
    missing = str(uuid.uuid4())
    for call in (client.booking, client.history, client.cancel):
        with pytest.raises(grpc.RpcError) as refused:
            call(missing)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
