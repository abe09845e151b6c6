"""A small synchronous client of the four services, for tests that drive real processes.

It reads only the public APIs, so what it sees is what a user could check.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.booking.v1 import booking_pb2, booking_pb2_grpc
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.notification.v1 import notification_pb2, notification_pb2_grpc
from tests.conftest import unique_email

SETTLED = frozenset(
    {
        booking_pb2.BOOKING_STATUS_CONFIRMED,
        booking_pb2.BOOKING_STATUS_FAILED,
        booking_pb2.BOOKING_STATUS_CANCELLED,
    }
)
SAGA_DONE = frozenset({booking_pb2.SAGA_STATUS_COMPLETED, booking_pb2.SAGA_STATUS_COMPENSATED})


def status_name(status: booking_pb2.BookingStatus.ValueType) -> str:
    name: str = booking_pb2.BookingStatus.Name(status)
    return name.removeprefix("BOOKING_STATUS_")


@dataclass
class Client:
    """Stubs over one channel per service; `booking_port` may point at any replica."""

    ports: dict[str, int]
    channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        def channel(module: str) -> grpc.Channel:
            made = grpc.insecure_channel(f"127.0.0.1:{self.ports[module]}")
            self.channels.append(made)
            return made

        self.accounts = account_pb2_grpc.AccountServiceStub(channel("account_svc"))
        self.events = event_pb2_grpc.EventServiceStub(channel("event_svc"))
        self.bookings = booking_pb2_grpc.BookingServiceStub(channel("booking_svc"))
        self.admin = booking_pb2_grpc.SagaAdminServiceStub(self.channels[-1])
        self.notifications = notification_pb2_grpc.NotificationServiceStub(
            channel("notification_svc")
        )

    def close(self) -> None:
        for made in self.channels:
            made.close()

    def account(self, *, balance_cents: int) -> str:
        """A new account holding `balance_cents`; returns its id."""
        created = self.accounts.CreateAccount(
            account_pb2.CreateAccountRequest(email=unique_email(), display_name="Test"),
            timeout=10,
        )
        account_id: str = created.account.account_id
        if balance_cents:
            self.accounts.Deposit(
                account_pb2.DepositRequest(
                    account_id=account_id,
                    amount_cents=balance_cents,
                    idempotency_key=f"deposit-{uuid.uuid4()}",
                ),
                timeout=10,
            )
        return account_id

    def event(self, *, capacity: int, price_cents: int) -> str:
        """A new event; returns its id."""
        request = event_pb2.CreateEventRequest(
            name=f"Event {uuid.uuid4().hex[:8]}",
            venue="Hall",
            capacity=capacity,
            price_cents=price_cents,
        )
        request.starts_at.FromSeconds(int(time.time()) + 86_400)
        created = self.events.CreateEvent(request, timeout=10)
        event_id: str = created.event.event_id
        return event_id

    def book(
        self, account_id: str, event_id: str, *, quantity: int = 1, key: str | None = None
    ) -> booking_pb2.Booking:
        """Start a booking and return it as CreateBooking answered (usually PENDING)."""
        reply = self.bookings.CreateBooking(
            booking_pb2.CreateBookingRequest(
                account_id=account_id,
                event_id=event_id,
                quantity=quantity,
                idempotency_key=key or f"booking-{uuid.uuid4()}",
            ),
            timeout=10,
        )
        return reply.booking

    def cancel(self, booking_id: str) -> booking_pb2.Booking:
        reply = self.bookings.CancelBooking(
            booking_pb2.CancelBookingRequest(booking_id=booking_id), timeout=10
        )
        return reply.booking

    def booking(self, booking_id: str) -> booking_pb2.Booking:
        reply = self.bookings.GetBooking(
            booking_pb2.GetBookingRequest(booking_id=booking_id), timeout=10
        )
        return reply.booking

    def history(self, booking_id: str) -> booking_pb2.GetBookingHistoryResponse:
        reply: booking_pb2.GetBookingHistoryResponse = self.bookings.GetBookingHistory(
            booking_pb2.GetBookingHistoryRequest(booking_id=booking_id), timeout=10
        )
        return reply

    def saga(self, saga_id: str) -> booking_pb2.GetSagaResponse:
        reply: booking_pb2.GetSagaResponse = self.admin.GetSaga(
            booking_pb2.GetSagaRequest(saga_id=saga_id), timeout=10
        )
        return reply

    def wait_done(self, booking_id: str, *, timeout: float = 60) -> booking_pb2.Booking:
        """The booking once every saga of it has finished (COMPLETED or COMPENSATED)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                history = self.history(booking_id)
                if history.saga_status in SAGA_DONE:
                    booking = self.booking(booking_id)
                    if booking.status in SETTLED:
                        return booking
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"booking {booking_id} did not finish in {timeout} s")
            time.sleep(0.1)

    def transactions(self, account_id: str) -> list[account_pb2.Transaction]:
        reply = self.accounts.ListTransactions(
            account_pb2.ListTransactionsRequest(account_id=account_id, page_size=500), timeout=10
        )
        return list(reply.transactions)

    def net_charged(self, account_id: str) -> int:
        """Charges minus refunds of an account, in cents."""
        net = 0
        for t in self.transactions(account_id):
            if t.kind == account_pb2.TRANSACTION_KIND_CHARGE:
                net += t.amount_cents
            elif t.kind == account_pb2.TRANSACTION_KIND_REFUND:
                net -= t.amount_cents
        return net

    def charges(self, account_id: str) -> int:
        return sum(
            1
            for t in self.transactions(account_id)
            if t.kind == account_pb2.TRANSACTION_KIND_CHARGE
        )

    def seats(self, event_id: str) -> event_pb2.Event:
        reply = self.events.GetEvent(event_pb2.GetEventRequest(event_id=event_id), timeout=10)
        return reply.event

    def notification_kinds(self, account_id: str) -> list[str]:
        reply: Any = self.notifications.ListNotifications(
            notification_pb2.ListNotificationsRequest(account_id=account_id), timeout=10
        )
        return sorted(
            notification_pb2.NotificationKind.Name(n.kind).removeprefix("NOTIFICATION_KIND_")
            for n in reply.notifications
        )
