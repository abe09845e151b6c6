"""The BookingService and SagaAdminService servicers: proto in, command, handler, proto out.

Who may call what is in `ACCESS` and `ADMIN_ACCESS`; a user's token is let in
by the server, and each BookingService method then checks that the caller
may act for the account the request names or the booking belongs to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from booking_svc.domain import commands
from booking_svc.domain.model import Booking, LogDetail, SagaInstance
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from booking_svc.service_layer.handlers import BookingHandlers
from eventbooking import auth
from eventbooking.booking.v1 import booking_pb2 as pb
from eventbooking.booking.v1 import booking_pb2_grpc
from eventbooking.errors import InvalidArgument, PermissionDenied
from eventbooking.paging import decode_token, encode_token
from eventbooking.protoconv import timestamp
from eventbooking.server import Service
from eventbooking.validation import parse_uuid

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BookingService"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SagaAdminService"].full_name

# Users (or the admin); each method then checks the account it touches with auth.require_account.
ACCESS = {
    f"/{SERVICE_NAME}/{method}": auth.Access.USER
    for method in (
        "CreateBooking",
        "GetBooking",
        "ListBookings",
        "CancelBooking",
        "GetBookingHistory",
        "WatchBooking",
    )
}
# Saga repair and listings across accounts are for operators only.
ADMIN_ACCESS = {
    f"/{ADMIN_SERVICE_NAME}/{method.name}": auth.Access.ADMIN
    for method in pb.DESCRIPTOR.services_by_name["SagaAdminService"].methods
}

# How long before the caller's deadline a waiting call answers, so the answer arrives in time.
DEADLINE_MARGIN_SECONDS = 0.05

_BOOKING_STATUS = {
    BookingStatus.PENDING: pb.BOOKING_STATUS_PENDING,
    BookingStatus.CONFIRMED: pb.BOOKING_STATUS_CONFIRMED,
    BookingStatus.FAILED: pb.BOOKING_STATUS_FAILED,
    BookingStatus.CANCELLING: pb.BOOKING_STATUS_CANCELLING,
    BookingStatus.CANCELLED: pb.BOOKING_STATUS_CANCELLED,
}
_SAGA_STATUS = {
    SagaStatus.RUNNING: pb.SAGA_STATUS_RUNNING,
    SagaStatus.COMPENSATING: pb.SAGA_STATUS_COMPENSATING,
    SagaStatus.COMPLETED: pb.SAGA_STATUS_COMPLETED,
    SagaStatus.COMPENSATED: pb.SAGA_STATUS_COMPENSATED,
    SagaStatus.STUCK: pb.SAGA_STATUS_STUCK,
}
_SAGA_STATUS_FROM_PB = {value: key for key, value in _SAGA_STATUS.items()}
_PHASE = {
    StepPhase.ACTION: pb.STEP_PHASE_ACTION,
    StepPhase.COMPENSATION: pb.STEP_PHASE_COMPENSATION,
}
_EVENT = {
    StepEvent.STARTED: pb.STEP_EVENT_STARTED,
    StepEvent.SUCCEEDED: pb.STEP_EVENT_SUCCEEDED,
    StepEvent.FAILED: pb.STEP_EVENT_FAILED,
    StepEvent.RETRYING: pb.STEP_EVENT_RETRYING,
}
# W3C trace context headers a caller may send; the saga keeps them to continue its trace.
_TRACE_HEADERS = ("traceparent", "tracestate")

Context = grpc.aio.ServicerContext[Any, Any]


def booking_pb(b: Booking) -> pb.Booking:
    return pb.Booking(
        booking_id=str(b.booking_id),
        account_id=str(b.account_id),
        event_id=str(b.event_id),
        quantity=b.quantity,
        amount_cents=b.amount_cents,
        status=_BOOKING_STATUS[b.status],
        failure_reason=b.failure_reason,
        created_at=timestamp(b.created_at),
        updated_at=timestamp(b.updated_at),
        idempotency_key=b.idempotency_key,
    )


def trace_id_of(saga: SagaInstance) -> str:
    """The trace id inside the saga's stored traceparent, or "" without one."""
    parts = saga.trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""


def saga_pb(s: SagaInstance) -> pb.Saga:
    return pb.Saga(
        saga_id=str(s.saga_id),
        kind=s.kind,
        booking_id=str(s.booking_id),
        status=_SAGA_STATUS[s.status],
        current_step=s.current_step,
        owner=s.owner or "",
        lease_expires_at=timestamp(s.lease_expires_at) if s.lease_expires_at else None,
        version=s.version,
        cancel_requested=s.cancel_requested,
        note=s.note,
        trace_id=trace_id_of(s),
        created_at=timestamp(s.created_at),
        updated_at=timestamp(s.updated_at),
    )


def _row_fields(d: LogDetail) -> dict[str, Any]:
    """What a log row's two messages (history and operator view) have in common."""
    e = d.entry
    return {
        "seq": e.seq,
        "step": e.step,
        "phase": _PHASE[e.phase],
        "event": _EVENT[e.event],
        "attempt": e.attempt,
        "code": e.code,
        "message": e.message,
        "at": timestamp(e.at),
        "trace_id": d.trace_id or "",
    }


def log_entry_pb(d: LogDetail) -> pb.SagaLogEntry:
    response = d.response_summary
    return pb.SagaLogEntry(
        **_row_fields(d),
        span_id=d.span_id or "",
        owner=d.owner or "",
        request_json=json.dumps(d.request_summary, sort_keys=True),
        response_json=json.dumps(response, sort_keys=True) if response is not None else "",
    )


def history_entry_pb(saga_id: str, d: LogDetail) -> pb.HistoryEntry:
    return pb.HistoryEntry(**_row_fields(d), saga_id=saga_id)


def _trace_context(context: Context) -> dict[str, str]:
    metadata = context.invocation_metadata() or ()
    return {
        str(key): str(value)
        for key, value in metadata
        if key in _TRACE_HEADERS and isinstance(value, str)
    }


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    def __init__(self, handlers: BookingHandlers, *, max_wait_seconds: float) -> None:
        self._handlers = handlers
        self._max_wait = max_wait_seconds

    def _wait(self, wanted: bool, context: Context) -> float | None:
        """How long a call may wait for an outcome: up to its deadline, or the configured cap."""
        if not wanted:
            return None
        remaining = context.time_remaining()
        if remaining is None:
            return self._max_wait
        return max(0.0, min(self._max_wait, remaining - DEADLINE_MARGIN_SECONDS))

    async def CreateBooking(
        self, request: pb.CreateBookingRequest, context: Context
    ) -> pb.CreateBookingResponse:
        cmd = commands.CreateBooking.parse(
            account_id=request.account_id,
            event_id=request.event_id,
            quantity=request.quantity,
            idempotency_key=request.idempotency_key,
        )
        # Before the rate limit, so another account's token cannot use up this account's share.
        auth.require_account(cmd.account_id)
        booking = await self._handlers.create_booking(
            cmd,
            wait=self._wait(request.wait_for_outcome, context),
            trace_context=_trace_context(context),
        )
        return pb.CreateBookingResponse(booking=booking_pb(booking))

    async def GetBooking(
        self, request: pb.GetBookingRequest, context: Context
    ) -> pb.GetBookingResponse:
        booking = await self._owned_booking(request.booking_id)
        return pb.GetBookingResponse(booking=booking_pb(booking))

    async def ListBookings(
        self, request: pb.ListBookingsRequest, context: Context
    ) -> pb.ListBookingsResponse:
        cmd = commands.ListBookings.parse(
            account_id=request.account_id,
            size=request.page_size,
            after=decode_token(request.page_token),
        )
        if cmd.account_id is None:
            _require_admin_for_every_account()
        else:
            auth.require_account(cmd.account_id)
        page = await self._handlers.list_bookings(cmd)
        return pb.ListBookingsResponse(
            bookings=[booking_pb(b) for b in page.bookings],
            next_page_token=encode_token(*page.next_after) if page.next_after else "",
        )

    async def CancelBooking(
        self, request: pb.CancelBookingRequest, context: Context
    ) -> pb.CancelBookingResponse:
        owned = await self._owned_booking(request.booking_id)
        booking = await self._handlers.cancel_booking(
            owned.booking_id, wait=self._wait(request.wait_for_outcome, context)
        )
        return pb.CancelBookingResponse(booking=booking_pb(booking))

    async def GetBookingHistory(
        self, request: pb.GetBookingHistoryRequest, context: Context
    ) -> pb.GetBookingHistoryResponse:
        owned = await self._owned_booking(request.booking_id)
        history = await self._handlers.history(owned.booking_id)
        return pb.GetBookingHistoryResponse(
            saga_id=str(history.saga.saga_id),
            saga_status=_SAGA_STATUS[history.saga.status],
            entries=[history_entry_pb(str(saga_id), row) for saga_id, row in history.rows],
        )

    async def WatchBooking(
        self, request: pb.WatchBookingRequest, context: Context
    ) -> AsyncIterator[pb.WatchBookingResponse]:
        owned = await self._owned_booking(request.booking_id)
        async for booking in self._handlers.watch(owned.booking_id):
            yield pb.WatchBookingResponse(booking=booking_pb(booking))

    async def _owned_booking(self, booking_id: str) -> Booking:
        """The booking, if the caller may act for its account.

        NOT_FOUND for a booking that does not exist; PERMISSION_DENIED for another account's.
        """
        booking = await self._handlers.get_booking(parse_uuid("booking_id", booking_id))
        auth.require_account(booking.account_id)
        return booking


class SagaAdminServicer(booking_pb2_grpc.SagaAdminServiceServicer):
    def __init__(self, handlers: BookingHandlers) -> None:
        self._handlers = handlers

    async def ListSagas(
        self, request: pb.ListSagasRequest, context: Context
    ) -> pb.ListSagasResponse:
        status = None
        if request.status != pb.SAGA_STATUS_UNSPECIFIED:
            try:
                status = _SAGA_STATUS_FROM_PB[request.status]
            except KeyError:
                raise InvalidArgument(f"status {request.status} is not a saga status") from None
        cmd = commands.ListSagas.parse(
            status=status,
            kind=request.kind,
            step=request.step,
            min_age_seconds=request.min_age_seconds,
            size=request.page_size,
            after=decode_token(request.page_token),
        )
        page = await self._handlers.list_sagas(cmd)
        return pb.ListSagasResponse(
            sagas=[saga_pb(s) for s in page.sagas],
            next_page_token=encode_token(*page.next_after) if page.next_after else "",
        )

    async def GetSaga(self, request: pb.GetSagaRequest, context: Context) -> pb.GetSagaResponse:
        saga, rows = await self._handlers.get_saga(parse_uuid("saga_id", request.saga_id))
        return pb.GetSagaResponse(saga=saga_pb(saga), entries=[log_entry_pb(r) for r in rows])

    async def RetrySaga(
        self, request: pb.RetrySagaRequest, context: Context
    ) -> pb.RetrySagaResponse:
        saga = await self._handlers.retry_saga(parse_uuid("saga_id", request.saga_id))
        return pb.RetrySagaResponse(saga=saga_pb(saga))

    async def CompensateSaga(
        self, request: pb.CompensateSagaRequest, context: Context
    ) -> pb.CompensateSagaResponse:
        saga = await self._handlers.compensate_saga(parse_uuid("saga_id", request.saga_id))
        return pb.CompensateSagaResponse(saga=saga_pb(saga))


def _require_admin_for_every_account() -> None:
    try:
        auth.require_admin()
    except PermissionDenied:
        raise PermissionDenied(
            "account_id is required: only the admin token may list every account's bookings"
        ) from None


def grpc_services(handlers: BookingHandlers, *, max_wait_seconds: float) -> list[Service]:
    """Both servicers over `handlers`, with their access tables, for `create_server`."""
    servicer = BookingServicer(handlers, max_wait_seconds=max_wait_seconds)
    admin = SagaAdminServicer(handlers)
    return [
        Service(
            SERVICE_NAME,
            lambda s: booking_pb2_grpc.add_BookingServiceServicer_to_server(servicer, s),
            access=ACCESS,
        ),
        Service(
            ADMIN_SERVICE_NAME,
            lambda s: booking_pb2_grpc.add_SagaAdminServiceServicer_to_server(admin, s),
            access=ADMIN_ACCESS,
        ),
    ]
