"""A small synchronous client of the four services, for tests that drive real processes.

It reads only the public APIs, so what it sees is what a user could check.
Every call carries the token a real caller would send: the account's own
API token for what concerns one account or its bookings (remembered from
CreateAccount and CreateBooking), the admin token for CreateEvent, the
SagaAdminService and anything that names no account, and none for
CreateAccount. A call that sets its own `authorization` metadata keeps it.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Iterator
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
PUBLIC_METHODS = frozenset({"/eventbooking.account.v1.AccountService/CreateAccount"})
ADMIN_METHODS = frozenset({"/eventbooking.event.v1.EventService/CreateEvent"})
ADMIN_SERVICES = ("/eventbooking.booking.v1.SagaAdminService/",)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """The metadata of a call made with `token`."""
    return (("authorization", f"Bearer {token}"),)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _Authorize(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` with the token `choose` picks for a call."""

    def __init__(self, choose: Callable[[str, Any], str | None]) -> None:
        self._choose = choose

    def _with_token(self, details: grpc.ClientCallDetails, request: Any) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        token = self._choose(details.method, request)
        if token is None or any(key == "authorization" for key, _ in metadata):
            return details
        return _CallDetails(
            details.method,
            details.timeout,
            [*metadata, *bearer(token)],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details, request), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details, request), request)


def status_name(status: booking_pb2.BookingStatus.ValueType) -> str:
    name: str = booking_pb2.BookingStatus.Name(status)
    return name.removeprefix("BOOKING_STATUS_")


@dataclass
class Client:
    """Stubs over one channel per service; `ports["booking_svc"]` may point at any replica.

    `credentials` makes the channels TLS (mutual TLS with a client certificate).
    """

    ports: dict[str, int]
    admin_token: str = field(repr=False)
    credentials: grpc.ChannelCredentials | None = None
    # Account id -> its API token, and booking id -> its account; shared by `elsewhere`.
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    owners: dict[str, str] = field(default_factory=dict)
    channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        authorize = _Authorize(self._token_for)

        def channel(module: str) -> grpc.Channel:
            address = f"127.0.0.1:{self.ports[module]}"
            made = (
                grpc.secure_channel(address, self.credentials)
                if self.credentials
                else grpc.insecure_channel(address)
            )
            self.channels.append(made)
            return grpc.intercept_channel(made, authorize)

        self.accounts = account_pb2_grpc.AccountServiceStub(channel("account_svc"))
        self.events = event_pb2_grpc.EventServiceStub(channel("event_svc"))
        booking = channel("booking_svc")
        self.bookings = booking_pb2_grpc.BookingServiceStub(booking)
        self.admin = booking_pb2_grpc.SagaAdminServiceStub(booking)
        self.notifications = notification_pb2_grpc.NotificationServiceStub(
            channel("notification_svc")
        )

    def elsewhere(self, ports: dict[str, int]) -> Client:
        """A client of other ports (another replica) that knows the same accounts and tokens."""
        return Client(
            ports, self.admin_token, self.credentials, tokens=self.tokens, owners=self.owners
        )

    def close(self) -> None:
        for made in self.channels:
            made.close()

    def token(self, account_id: str) -> str:
        """The API token CreateAccount gave `account_id`."""
        return self.tokens[account_id]

    def _token_for(self, method: str, request: Any) -> str | None:
        if method in PUBLIC_METHODS:
            return None
        if method in ADMIN_METHODS or method.startswith(ADMIN_SERVICES):
            return self.admin_token
        account = getattr(request, "account_id", "") or self.owners.get(
            getattr(request, "booking_id", ""), ""
        )
        # Events and bookings this client did not make are the operator's to look at.
        return self.tokens.get(account, self.admin_token)

    def account(self, *, balance_cents: int) -> str:
        """A new account holding `balance_cents`; returns its id and keeps its token."""
        created = self.accounts.CreateAccount(
            account_pb2.CreateAccountRequest(email=unique_email(), display_name="Test"),
            timeout=10,
        )
        account_id: str = created.account.account_id
        self.tokens[account_id] = created.api_token
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
        self.owners[reply.booking.booking_id] = account_id
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
        """Every row of the account's ledger, newest first, through all pages."""
        return list(self._ledger(account_id))

    def _ledger(self, account_id: str) -> Iterator[account_pb2.Transaction]:
        page = ""
        while True:
            reply = self.accounts.ListTransactions(
                account_pb2.ListTransactionsRequest(
                    account_id=account_id, page_size=500, page_token=page
                ),
                timeout=10,
            )
            yield from reply.transactions
            page = reply.next_page_token
            if not page:
                return

    def balance(self, account_id: str) -> int:
        reply = self.accounts.GetAccount(
            account_pb2.GetAccountRequest(account_id=account_id), timeout=10
        )
        balance: int = reply.account.balance_cents
        return balance

    def ledger_total(self, account_id: str) -> int:
        """Deposits and refunds minus charges: what the balance must be."""
        signs = {
            account_pb2.TRANSACTION_KIND_DEPOSIT: 1,
            account_pb2.TRANSACTION_KIND_REFUND: 1,
            account_pb2.TRANSACTION_KIND_CHARGE: -1,
        }
        return sum(signs.get(t.kind, 0) * t.amount_cents for t in self._ledger(account_id))

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
