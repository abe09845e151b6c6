"""The NotificationService servicer: proto -> command -> service layer -> proto, nothing else.

Errors are raised as `eventbooking.errors` exceptions; the shared
`ErrorInterceptor` turns them into status codes. Only services send
(`ACCESS`); a user reads only its own account's notifications, and reading
every account's is for the admin.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from eventbooking import auth, validation
from eventbooking.errors import InvalidArgument, PermissionDenied
from eventbooking.notification.v1 import notification_pb2 as pb
from eventbooking.notification.v1 import notification_pb2_grpc as pb_grpc
from eventbooking.server import Service
from notification_svc.domain.model import Notification, NotificationKind, SendNotification
from notification_svc.service_layer.handlers import NotificationService

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name

ACCESS = {
    f"/{SERVICE_NAME}/SendNotification": auth.Access.SERVICE,
    # The servicer then checks the account named, or the admin token for all accounts.
    f"/{SERVICE_NAME}/ListNotifications": auth.Access.USER,
    f"/{SERVICE_NAME}/StreamNotifications": auth.Access.USER,
}

_KIND_FROM_PROTO: dict[pb.NotificationKind.ValueType, NotificationKind] = {
    pb.NOTIFICATION_KIND_BOOKING_CONFIRMED: NotificationKind.BOOKING_CONFIRMED,
    pb.NOTIFICATION_KIND_BOOKING_FAILED: NotificationKind.BOOKING_FAILED,
    pb.NOTIFICATION_KIND_BOOKING_CANCELLED: NotificationKind.BOOKING_CANCELLED,
    pb.NOTIFICATION_KIND_GENERAL: NotificationKind.GENERAL,
}
_KIND_TO_PROTO = {kind: value for value, kind in _KIND_FROM_PROTO.items()}


def kind_from_proto(value: pb.NotificationKind.ValueType) -> NotificationKind | None:
    """The domain kind of a proto enum value; None for UNSPECIFIED."""
    if value == pb.NOTIFICATION_KIND_UNSPECIFIED:
        return None
    try:
        return _KIND_FROM_PROTO[value]
    except KeyError:
        # proto3 enums are open: a newer client may send a value this server does not know.
        raise InvalidArgument(f"kind {value} is not a known notification kind") from None


def notification_to_proto(notification: Notification) -> pb.Notification:
    """The wire form of a notification."""
    message = pb.Notification(
        notification_id=str(notification.notification_id),
        idempotency_key=notification.idempotency_key,
        account_id=str(notification.account_id),
        booking_id=str(notification.booking_id or ""),
        kind=_KIND_TO_PROTO[notification.kind],
        subject=notification.subject,
        body=notification.body,
    )
    message.created_at.FromDatetime(notification.created_at)
    return message


def readable_account(account_id: str) -> uuid.UUID | None:
    """The account a read names, if the caller may read it; None (every account) for the admin."""
    if account_id:
        parsed = validation.parse_uuid("account_id", account_id)
        auth.require_account(parsed)
        return parsed
    try:
        auth.require_admin()
    except PermissionDenied:
        raise PermissionDenied(
            "account_id is required: only the admin token may read every account's notifications"
        ) from None
    return None


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    """Serves eventbooking.notification.v1.NotificationService from a `NotificationService`."""

    def __init__(self, service: NotificationService) -> None:
        self._service = service

    async def SendNotification(
        self, request: pb.SendNotificationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendNotificationResponse:
        command = SendNotification.create(
            request.idempotency_key,
            request.account_id,
            booking_id=request.booking_id,
            kind=kind_from_proto(request.kind),
            subject=request.subject,
            body=request.body,
        )
        notification, duplicate = await self._service.send(command)
        return pb.SendNotificationResponse(
            notification=notification_to_proto(notification), duplicate=duplicate
        )

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListNotificationsResponse:
        account_id = readable_account(request.account_id)
        limit = validation.page_size(request.page_size)
        notifications = self._service.list_notifications(account_id, limit=limit)
        return pb.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in notifications]
        )

    async def StreamNotifications(
        self, request: pb.StreamNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamNotificationsResponse]:
        account_id = readable_account(request.account_id)
        with self._service.subscribe(account_id) as subscription:
            # Headers go out once subscribed, so a client can wait for them before sending.
            await context.send_initial_metadata(())
            async for notification in subscription:
                yield pb.StreamNotificationsResponse(
                    notification=notification_to_proto(notification)
                )


def grpc_service(service: NotificationService) -> Service:
    """The servicer over `service`, ready for `eventbooking.server.create_server`."""

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_NotificationServiceServicer_to_server(NotificationServicer(service), server)

    return Service(name=SERVICE_NAME, register=register, access=ACCESS)
