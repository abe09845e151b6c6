"""The bench's client of the four services over grpc.aio: setup, bookings, and checks.

Every call carries the token a real caller sends: an account's own API
token for its bookings and ledger, the admin token for events and the
SagaAdminService, and, in direct mode, the deployment's service credential
on the participant calls, exactly as booking_svc sends it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.booking.v1 import booking_pb2, booking_pb2_grpc
from eventbooking.channels import CHANNEL_OPTIONS
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.notification.v1 import notification_pb2, notification_pb2_grpc

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

FINAL = frozenset(
    {
        booking_pb2.BOOKING_STATUS_CONFIRMED,
        booking_pb2.BOOKING_STATUS_FAILED,
        booking_pb2.BOOKING_STATUS_CANCELLED,
    }
)
# Refusals that end a booking as FAILED in the saga too; any other code is an error here.
BUSINESS_CODES = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED})
# Calls in flight while accounts and events are made; setup is not measured.
SETUP_CONCURRENCY = 16
POLL_SECONDS = 0.1
POLL_CONCURRENCY = 32

# The saga's step names and the keys it derives from them (booking_svc/domain/saga.py:
# reservation_id, charge_key, participant_key), so that direct mode sends the same calls.
RESERVE_STEP = "reserve_seats"
CHARGE_STEP = "charge_account"
NOTIFY_STEP = "notify"


def _booking_setting(name: str, default: float) -> float:
    """A booking_svc setting as the embedded services see it: BOOKING_SVC_<NAME> or its default
    (booking_svc/settings.py)."""
    try:
        return float(os.environ.get(f"BOOKING_SVC_{name}", default))
    except ValueError:
        return default


def lease_seconds() -> float:
    """How long a saga stays with a booking_svc that stopped renewing (lease_seconds)."""
    return _booking_setting("LEASE_SECONDS", 10.0)


def hold_seconds() -> int:
    return int(_booking_setting("HOLD_SECONDS", 300))


def step_deadline_seconds() -> float:
    return _booking_setting("STEP_DEADLINE_SECONDS", 5.0)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def status_name(status: int) -> str:
    name: str = booking_pb2.BookingStatus.Name(status)  # type: ignore[arg-type]
    return name.removeprefix("BOOKING_STATUS_")


def error_outcome(err: grpc.aio.AioRpcError) -> str:
    return f"ERROR:{err.code().name}"


@dataclass(frozen=True)
class Account:
    account_id: str
    token: str = field(repr=False)
    # Bookings of the run this account makes, and the money it holds for them.
    bookings: int = 0


@dataclass(frozen=True)
class Fixtures:
    """Accounts and events of one run; booking i is made by account i mod len(accounts)
    for event i mod len(events), so every account stays within its share."""

    accounts: list[Account]
    events: list[str]
    price_cents: int

    def pick(self, index: int) -> tuple[int, Account, str]:
        account = index % len(self.accounts)
        return account, self.accounts[account], self.events[index % len(self.events)]


@dataclass(frozen=True)
class Booked:
    """What a booking call came back with."""

    outcome: str
    booking_id: str = ""
    amount_cents: int = 0
    detail: str = ""


async def _limited(gate: asyncio.Semaphore, call: Awaitable[T]) -> T:
    async with gate:
        return await call


class BenchClient:
    """Stubs over one channel per service; make it inside the running event loop."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        *,
        admin_token: str,
        service_credential: str | None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._admin = bearer(admin_token)
        self._service = bearer(service_credential) if service_credential else None
        self.timeout = timeout
        self._channels: list[grpc.aio.Channel] = []

        def channel(module: str) -> grpc.aio.Channel:
            address = addresses[module]
            made = (
                grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
                if credentials
                else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            )
            self._channels.append(made)
            return made

        self.accounts = account_pb2_grpc.AccountServiceStub(channel("account_svc"))
        self.events = event_pb2_grpc.EventServiceStub(channel("event_svc"))
        booking = channel("booking_svc")
        self.bookings = booking_pb2_grpc.BookingServiceStub(booking)
        self.sagas = booking_pb2_grpc.SagaAdminServiceStub(booking)
        self.notifications = notification_pb2_grpc.NotificationServiceStub(
            channel("notification_svc")
        )

    async def close(self) -> None:
        for made in self._channels:
            await made.close(None)

    # Setup.

    async def create_account(self, *, bookings: int, price_cents: int) -> Account:
        """A new account funded for `bookings` bookings of one seat at `price_cents`."""
        created = await self.accounts.CreateAccount(
            account_pb2.CreateAccountRequest(
                email=f"bench-{uuid.uuid4().hex[:16]}@example.com", display_name="Bench"
            ),
            timeout=self.timeout,
        )
        account = Account(created.account.account_id, created.api_token, bookings)
        if bookings:
            await self.accounts.Deposit(
                account_pb2.DepositRequest(
                    account_id=account.account_id,
                    amount_cents=bookings * price_cents,
                    idempotency_key=f"bench-deposit-{uuid.uuid4()}",
                ),
                timeout=self.timeout,
                metadata=bearer(account.token),
            )
        return account

    async def create_event(self, *, capacity: int, price_cents: int) -> str:
        request = event_pb2.CreateEventRequest(
            name=f"Bench {uuid.uuid4().hex[:8]}",
            venue="Bench Hall",
            capacity=capacity,
            price_cents=price_cents,
        )
        request.starts_at.FromSeconds(int(time.time()) + 30 * 86_400)
        created = await self.events.CreateEvent(request, timeout=self.timeout, metadata=self._admin)
        event_id: str = created.event.event_id
        return event_id

    async def fixtures(
        self,
        *,
        bookings: int,
        per_account: int,
        events: int,
        price_cents: int,
        seats_per_event: int | None = None,
    ) -> Fixtures:
        """Fresh accounts, each funded for exactly its share of `bookings`, and events with
        room for all of them unless `seats_per_event` says otherwise."""
        n_accounts = math.ceil(bookings / per_account)
        shares = [len(range(a, bookings, n_accounts)) for a in range(n_accounts)]
        n_events = max(1, min(events, bookings))
        capacity = seats_per_event or math.ceil(bookings / n_events)
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        accounts = await asyncio.gather(
            *(
                _limited(gate, self.create_account(bookings=share, price_cents=price_cents))
                for share in shares
            )
        )
        event_ids = await asyncio.gather(
            *(
                _limited(gate, self.create_event(capacity=capacity, price_cents=price_cents))
                for _ in range(n_events)
            )
        )
        return Fixtures(list(accounts), list(event_ids), price_cents)

    # Bookings through the saga.

    async def book(
        self, account: Account, event_id: str, *, wait: bool, deadline: float | None = None
    ) -> Booked:
        """CreateBooking with a unique key; with `wait`, the final status (polling GetBooking
        when the service answers PENDING) or PENDING if `deadline` (monotonic) comes first."""
        deadline = deadline or time.monotonic() + self.timeout
        try:
            reply = await self.bookings.CreateBooking(
                booking_pb2.CreateBookingRequest(
                    account_id=account.account_id,
                    event_id=event_id,
                    quantity=1,
                    idempotency_key=f"bench-{uuid.uuid4()}",
                    wait_for_outcome=wait,
                ),
                timeout=max(0.1, deadline - time.monotonic()),
                metadata=bearer(account.token),
            )
        except grpc.aio.AioRpcError as err:
            return Booked(error_outcome(err), detail=f"CreateBooking: {err.details()}")
        booking = reply.booking
        if wait and booking.status not in FINAL:
            booking = await self.wait_final(account, booking.booking_id, deadline=deadline)
        return Booked(
            status_name(booking.status),
            booking.booking_id,
            booking.amount_cents,
            booking.failure_reason,
        )

    async def wait_final(
        self, account: Account, booking_id: str, *, deadline: float
    ) -> booking_pb2.Booking:
        """The booking once final, or as it stands at `deadline`; outages are waited out."""
        booking = booking_pb2.Booking(booking_id=booking_id)
        while True:
            try:
                reply = await self.bookings.GetBooking(
                    booking_pb2.GetBookingRequest(booking_id=booking_id),
                    timeout=max(0.1, min(10.0, deadline - time.monotonic())),
                    metadata=bearer(account.token),
                )
                booking = reply.booking
                if booking.status in FINAL:
                    return booking
            except grpc.aio.AioRpcError as err:
                if err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
            if time.monotonic() >= deadline:
                return booking
            await asyncio.sleep(POLL_SECONDS)

    async def poll_final(
        self, bookings: Sequence[tuple[Account, str]], *, deadline: float
    ) -> dict[str, str]:
        """Each booking's status once every one is final, or as they stand at `deadline`
        (monotonic); unfinished ones read PENDING. Polls only those not final yet."""
        statuses = dict.fromkeys((booking_id for _, booking_id in bookings), "PENDING")
        owners = {booking_id: account for account, booking_id in bookings}
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def look(booking_id: str) -> None:
            async with gate:
                try:
                    reply = await self.bookings.GetBooking(
                        booking_pb2.GetBookingRequest(booking_id=booking_id),
                        timeout=max(0.1, min(10.0, deadline - time.monotonic())),
                        metadata=bearer(owners[booking_id].token),
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        return
                    raise
            if reply.booking.status in FINAL:
                statuses[booking_id] = status_name(reply.booking.status)

        while True:
            pending = [b for b, status in statuses.items() if status == "PENDING"]
            if not pending or time.monotonic() >= deadline:
                return statuses
            await asyncio.gather(*(look(b) for b in pending))
            if any(statuses[b] == "PENDING" for b in pending):
                await asyncio.sleep(POLL_SECONDS)

    # Bookings without a saga.

    async def book_direct(self, account: Account, event_id: str) -> Booked:
        """The saga's participant calls, in its order, with its requests, keys and credential,
        and no log, no retry and no recovery: ReserveSeats, Charge, ConfirmReservation,
        SendNotification. A refused step before the last undoes what may have run, once."""
        if self._service is None:
            raise ValueError("direct mode needs the service credential")
        saga_id, booking_id = uuid.uuid4(), uuid.uuid4()
        reservation_id = str(uuid.uuid5(saga_id, RESERVE_STEP))
        charge_key = f"{saga_id}:{CHARGE_STEP}"
        deadline = step_deadline_seconds()
        metadata = self._service
        step = RESERVE_STEP
        charged = False
        try:
            held = await self.events.ReserveSeats(
                event_pb2.ReserveSeatsRequest(
                    reservation_id=reservation_id,
                    event_id=event_id,
                    quantity=1,
                    hold_seconds=hold_seconds(),
                ),
                timeout=deadline,
                metadata=metadata,
            )
            amount = held.reservation.amount_cents
            step, charged = CHARGE_STEP, True
            await self.accounts.Charge(
                account_pb2.ChargeRequest(
                    account_id=account.account_id,
                    amount_cents=amount,
                    idempotency_key=charge_key,
                    reference=str(booking_id),
                ),
                timeout=deadline,
                metadata=metadata,
            )
            step = "confirm_seats"
            await self.events.ConfirmReservation(
                event_pb2.ConfirmReservationRequest(reservation_id=reservation_id),
                timeout=deadline,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as err:
            await self._undo(reservation_id, charge_key if charged else None, booking_id)
            outcome = "FAILED" if err.code() in BUSINESS_CODES else error_outcome(err)
            return Booked(outcome, str(booking_id), detail=f"{step}: {err.details()}")
        try:
            await self.notifications.SendNotification(
                notification_pb2.SendNotificationRequest(
                    idempotency_key=f"{saga_id}:{NOTIFY_STEP}",
                    account_id=account.account_id,
                    booking_id=str(booking_id),
                    kind=notification_pb2.NOTIFICATION_KIND_BOOKING_CONFIRMED,
                    subject="Your booking is confirmed",
                    body=(
                        f"Booking {booking_id} (1 seat for event {event_id}) is confirmed; "
                        f"{amount / 100:.2f} is charged."
                    ),
                ),
                timeout=deadline,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as err:
            return Booked(error_outcome(err), str(booking_id), amount, f"notify: {err.details()}")
        return Booked("CONFIRMED", str(booking_id), amount)

    async def _undo(
        self, reservation_id: str, charge_key: str | None, booking_id: uuid.UUID
    ) -> None:
        """Refund (when the charge may have run) and release, in the saga's reverse order."""
        assert self._service is not None
        try:
            if charge_key:
                await self.accounts.Refund(
                    account_pb2.RefundRequest(
                        idempotency_key=charge_key, reason=f"booking {booking_id} failed"
                    ),
                    timeout=step_deadline_seconds(),
                    metadata=self._service,
                )
            await self.events.ReleaseReservation(
                event_pb2.ReleaseReservationRequest(reservation_id=reservation_id),
                timeout=step_deadline_seconds(),
                metadata=self._service,
            )
        except grpc.aio.AioRpcError:
            # No recovery in direct mode: what is left behind is what the mode measures without.
            return

    # Checks.

    async def _any_saga(self, status: int) -> bool:
        reply = await self.sagas.ListSagas(
            booking_pb2.ListSagasRequest(status=status, page_size=1),  # type: ignore[arg-type]
            timeout=self.timeout,
            metadata=self._admin,
        )
        return bool(reply.sagas)

    async def count_sagas(self, status: int) -> int:
        """Sagas in `status` now, through every page of ListSagas."""
        count, token = 0, ""
        while True:
            reply = await self.sagas.ListSagas(
                booking_pb2.ListSagasRequest(status=status, page_size=500, page_token=token),  # type: ignore[arg-type]
                timeout=self.timeout,
                metadata=self._admin,
            )
            count += len(reply.sagas)
            token = reply.next_page_token
            if not token:
                return count

    async def wait_quiet(self, *, within: float) -> bool:
        """Wait until no saga runs or compensates; False when `within` seconds pass first."""
        deadline = time.monotonic() + within
        while True:
            try:
                busy = await self._any_saga(
                    booking_pb2.SAGA_STATUS_RUNNING
                ) or await self._any_saga(booking_pb2.SAGA_STATUS_COMPENSATING)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                busy = True
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)

    async def net_charged(self, account: Account) -> int:
        """Charges minus refunds in the account's ledger, in cents."""
        net, token = 0, ""
        while True:
            reply = await self.accounts.ListTransactions(
                account_pb2.ListTransactionsRequest(
                    account_id=account.account_id, page_size=500, page_token=token
                ),
                timeout=self.timeout,
                metadata=bearer(account.token),
            )
            for row in reply.transactions:
                if row.kind == account_pb2.TRANSACTION_KIND_CHARGE:
                    net += row.amount_cents
                elif row.kind == account_pb2.TRANSACTION_KIND_REFUND:
                    net -= row.amount_cents
            token = reply.next_page_token
            if not token:
                return net

    async def event(self, event_id: str) -> event_pb2.Event:
        reply = await self.events.GetEvent(
            event_pb2.GetEventRequest(event_id=event_id), timeout=self.timeout, metadata=self._admin
        )
        return reply.event

    async def history_rows(self, account: Account, booking_id: str) -> int:
        """Rows the workflow log holds for a booking, over all of its sagas."""
        reply = await self.bookings.GetBookingHistory(
            booking_pb2.GetBookingHistoryRequest(booking_id=booking_id),
            timeout=self.timeout,
            metadata=bearer(account.token),
        )
        return len(reply.entries)
