"""The participants, as the saga engine sees them, and their implementation over gRPC.

`Participants` is what the engine needs of the other services; unit tests
pass fakes. Every call takes a `deadline` (seconds it may take) and either
returns or raises `ParticipantError` carrying the reply's gRPC status code
name, so the engine never sees gRPC's types. `GrpcParticipants` reuses one
channel per service for every saga (TLS when the settings name a CA) and
sends the deployment's service credential on every call.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import grpc

from eventbooking import channels, retry, telemetry
from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.notification.v1 import notification_pb2, notification_pb2_grpc
from eventbooking.settings import ServiceSettings


class ParticipantError(Exception):
    """A participant call that did not return OK; `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """True when trying the same call again may give another answer."""
        return retry.is_transient(self)


@dataclass(frozen=True)
class Held:
    """What a successful ReserveSeats reports: the price of the seats and when the hold lapses."""

    amount_cents: int
    expires_at: datetime | None
    status: str


@dataclass(frozen=True)
class Charged:
    transaction_id: str
    balance_cents: int


@dataclass(frozen=True)
class Refunded:
    # Empty when the charge never happened: the key is dead now.
    transaction_id: str


@dataclass(frozen=True)
class ReservationState:
    status: str


@dataclass(frozen=True)
class Notified:
    notification_id: str
    duplicate: bool


class Participants(Protocol):
    async def reserve_seats(
        self,
        *,
        reservation_id: uuid.UUID,
        event_id: uuid.UUID,
        quantity: int,
        hold_seconds: int,
        deadline: float,
    ) -> Held: ...

    async def confirm_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState: ...

    async def release_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState: ...

    async def charge(
        self,
        *,
        account_id: uuid.UUID,
        amount_cents: int,
        idempotency_key: str,
        reference: str,
        deadline: float,
    ) -> Charged: ...

    async def refund(self, *, idempotency_key: str, reason: str, deadline: float) -> Refunded: ...

    async def send_notification(
        self,
        *,
        idempotency_key: str,
        account_id: uuid.UUID,
        booking_id: uuid.UUID,
        kind: str,
        subject: str,
        body: str,
        deadline: float,
    ) -> Notified: ...


T = TypeVar("T")

_KINDS = {
    "booking_confirmed": notification_pb2.NOTIFICATION_KIND_BOOKING_CONFIRMED,
    "booking_failed": notification_pb2.NOTIFICATION_KIND_BOOKING_FAILED,
    "booking_cancelled": notification_pb2.NOTIFICATION_KIND_BOOKING_CANCELLED,
}


async def _rpc(
    method: str,
    metadata: Sequence[tuple[str, str]],
    call: Callable[[Sequence[tuple[str, str]]], Awaitable[T]],
) -> T:
    try:
        return await telemetry.traced_call(method, metadata, call)
    except grpc.aio.AioRpcError as err:
        raise ParticipantError(err.code().name, err.details() or "") from None


def _reservation_status(reservation: event_pb2.Reservation) -> str:
    name: str = event_pb2.ReservationStatus.Name(reservation.status)
    return name.removeprefix("RESERVATION_STATUS_")


class GrpcParticipants:
    """Stubs over one channel per participant, opened on first use inside the running loop.

    `settings` give the TLS files and the service credential; the addresses are the
    participants'.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        account_address: str,
        event_address: str,
        notification_address: str,
    ) -> None:
        self._settings = settings
        self._addresses = (account_address, event_address, notification_address)
        # Read now, so a missing or short credential stops the service at start, not mid-saga.
        self._metadata: Sequence[tuple[str, str]] = channels.service_metadata(settings)
        self._channels: list[grpc.aio.Channel] = []

    def _open(self) -> None:
        # grpc.aio channels belong to the event loop they are made in, so not at import or bootstrap.
        # Client spans come from _rpc, which is cheaper than an interceptor on this hot path.
        self._channels = [
            channels.channel(address, self._settings, traced=False) for address in self._addresses
        ]
        account, event, notification = self._channels
        self._account_stub = account_pb2_grpc.AccountServiceStub(account)
        self._event_stub = event_pb2_grpc.EventServiceStub(event)
        self._notification_stub = notification_pb2_grpc.NotificationServiceStub(notification)

    @property
    def _accounts(self) -> account_pb2_grpc.AccountServiceAsyncStub:
        if not self._channels:
            self._open()
        return self._account_stub

    @property
    def _events(self) -> event_pb2_grpc.EventServiceAsyncStub:
        if not self._channels:
            self._open()
        return self._event_stub

    @property
    def _notifications(self) -> notification_pb2_grpc.NotificationServiceAsyncStub:
        if not self._channels:
            self._open()
        return self._notification_stub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        self._channels = []

    async def reserve_seats(
        self,
        *,
        reservation_id: uuid.UUID,
        event_id: uuid.UUID,
        quantity: int,
        hold_seconds: int,
        deadline: float,
    ) -> Held:
        request = event_pb2.ReserveSeatsRequest(
            reservation_id=str(reservation_id),
            event_id=str(event_id),
            quantity=quantity,
            hold_seconds=hold_seconds,
        )
        reply = await _rpc(
            "/eventbooking.event.v1.EventService/ReserveSeats",
            self._metadata,
            lambda metadata: self._events.ReserveSeats(
                request, timeout=deadline, metadata=metadata
            ),
        )
        reservation = reply.reservation
        return Held(
            amount_cents=reservation.amount_cents,
            expires_at=(
                reservation.expires_at.ToDatetime(tzinfo=UTC)
                if reservation.HasField("expires_at")
                else None
            ),
            status=_reservation_status(reservation),
        )

    async def confirm_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState:
        request = event_pb2.ConfirmReservationRequest(reservation_id=str(reservation_id))
        reply = await _rpc(
            "/eventbooking.event.v1.EventService/ConfirmReservation",
            self._metadata,
            lambda metadata: self._events.ConfirmReservation(
                request, timeout=deadline, metadata=metadata
            ),
        )
        return ReservationState(status=_reservation_status(reply.reservation))

    async def release_reservation(
        self, *, reservation_id: uuid.UUID, deadline: float
    ) -> ReservationState:
        request = event_pb2.ReleaseReservationRequest(reservation_id=str(reservation_id))
        reply = await _rpc(
            "/eventbooking.event.v1.EventService/ReleaseReservation",
            self._metadata,
            lambda metadata: self._events.ReleaseReservation(
                request, timeout=deadline, metadata=metadata
            ),
        )
        return ReservationState(status=_reservation_status(reply.reservation))

    async def charge(
        self,
        *,
        account_id: uuid.UUID,
        amount_cents: int,
        idempotency_key: str,
        reference: str,
        deadline: float,
    ) -> Charged:
        request = account_pb2.ChargeRequest(
            account_id=str(account_id),
            amount_cents=amount_cents,
            idempotency_key=idempotency_key,
            reference=reference,
        )
        reply = await _rpc(
            "/eventbooking.account.v1.AccountService/Charge",
            self._metadata,
            lambda metadata: self._accounts.Charge(request, timeout=deadline, metadata=metadata),
        )
        return Charged(
            transaction_id=reply.transaction.transaction_id, balance_cents=reply.balance_cents
        )

    async def refund(self, *, idempotency_key: str, reason: str, deadline: float) -> Refunded:
        request = account_pb2.RefundRequest(idempotency_key=idempotency_key, reason=reason)
        reply = await _rpc(
            "/eventbooking.account.v1.AccountService/Refund",
            self._metadata,
            lambda metadata: self._accounts.Refund(request, timeout=deadline, metadata=metadata),
        )
        return Refunded(transaction_id=reply.transaction.transaction_id)

    async def send_notification(
        self,
        *,
        idempotency_key: str,
        account_id: uuid.UUID,
        booking_id: uuid.UUID,
        kind: str,
        subject: str,
        body: str,
        deadline: float,
    ) -> Notified:
        request = notification_pb2.SendNotificationRequest(
            idempotency_key=idempotency_key,
            account_id=str(account_id),
            booking_id=str(booking_id),
            kind=_KINDS[kind],
            subject=subject,
            body=body,
        )
        reply = await _rpc(
            "/eventbooking.notification.v1.NotificationService/SendNotification",
            self._metadata,
            lambda metadata: self._notifications.SendNotification(
                request, timeout=deadline, metadata=metadata
            ),
        )
        return Notified(
            notification_id=reply.notification.notification_id, duplicate=reply.duplicate
        )
