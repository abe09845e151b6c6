"""The EventService servicer: proto in, command, handler, proto out."""

from __future__ import annotations

from typing import Any

import grpc

from event_svc.domain import commands
from event_svc.domain.model import Event, Reservation, ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from eventbooking.event.v1 import event_pb2 as pb
from eventbooking.event.v1 import event_pb2_grpc
from eventbooking.paging import decode_token, encode_token
from eventbooking.protoconv import from_timestamp, timestamp
from eventbooking.validation import parse_uuid

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EventService"].full_name

_STATUS = {
    ReservationStatus.HELD: pb.RESERVATION_STATUS_HELD,
    ReservationStatus.CONFIRMED: pb.RESERVATION_STATUS_CONFIRMED,
    ReservationStatus.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    ReservationStatus.EXPIRED: pb.RESERVATION_STATUS_EXPIRED,
}

Context = grpc.aio.ServicerContext[Any, Any]


def event_pb(e: Event) -> pb.Event:
    return pb.Event(
        event_id=str(e.event_id),
        name=e.name,
        venue=e.venue,
        starts_at=timestamp(e.starts_at),
        capacity=e.capacity,
        price_cents=e.price_cents,
        available_seats=e.available_seats,
        held_seats=e.held_seats,
        sold_seats=e.sold_seats,
        created_at=timestamp(e.created_at),
    )


def reservation_pb(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        reservation_id=str(r.reservation_id),
        event_id=str(r.event_id) if r.event_id else "",
        quantity=r.quantity,
        amount_cents=r.amount_cents,
        status=_STATUS[r.status],
        expires_at=timestamp(r.expires_at) if r.expires_at else None,
    )


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, handlers: EventHandlers) -> None:
        self._handlers = handlers

    async def CreateEvent(
        self, request: pb.CreateEventRequest, context: Context
    ) -> pb.CreateEventResponse:
        cmd = commands.CreateEvent.parse(
            name=request.name,
            venue=request.venue,
            starts_at=from_timestamp("starts_at", request.starts_at),
            capacity=request.capacity,
            price_cents=request.price_cents,
        )
        event = await self._handlers.create_event(cmd)
        return pb.CreateEventResponse(event=event_pb(event))

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        event = await self._handlers.get_event(parse_uuid("event_id", request.event_id))
        return pb.GetEventResponse(event=event_pb(event))

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Context
    ) -> pb.ListEventsResponse:
        cmd = commands.ListEvents.parse(
            size=request.page_size, after=decode_token(request.page_token)
        )
        page = await self._handlers.list_events(cmd)
        return pb.ListEventsResponse(
            events=[event_pb(e) for e in page.events],
            next_page_token=encode_token(*page.next_after) if page.next_after else "",
        )

    async def ReserveSeats(
        self, request: pb.ReserveSeatsRequest, context: Context
    ) -> pb.ReserveSeatsResponse:
        cmd = commands.ReserveSeats.parse(
            reservation_id=request.reservation_id,
            event_id=request.event_id,
            quantity=request.quantity,
            hold_seconds=request.hold_seconds,
        )
        reservation = await self._handlers.reserve_seats(cmd)
        return pb.ReserveSeatsResponse(reservation=reservation_pb(reservation))

    async def ConfirmReservation(
        self, request: pb.ConfirmReservationRequest, context: Context
    ) -> pb.ConfirmReservationResponse:
        cmd = commands.ConfirmReservation.parse(reservation_id=request.reservation_id)
        reservation = await self._handlers.confirm_reservation(cmd)
        return pb.ConfirmReservationResponse(reservation=reservation_pb(reservation))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context
    ) -> pb.ReleaseReservationResponse:
        cmd = commands.ReleaseReservation.parse(reservation_id=request.reservation_id)
        reservation = await self._handlers.release_reservation(cmd)
        return pb.ReleaseReservationResponse(reservation=reservation_pb(reservation))
