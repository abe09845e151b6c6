"""GrpcParticipants against fake participant servers that check the service credential.

The fakes serve Charge, Refund, ReserveSeats, ConfirmReservation,
ReleaseReservation and SendNotification behind the shared access checks,
as the real services do (SERVICE only), record the metadata of each call,
and run over plaintext or mutual TLS with certificates made for the test.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1._async import HealthServicer

from booking_svc.adapters.participants import GrpcParticipants, ParticipantError
from booking_svc.settings import Settings
from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.auth import Access
from eventbooking.event.v1 import event_pb2, event_pb2_grpc
from eventbooking.notification.v1 import notification_pb2, notification_pb2_grpc
from eventbooking.server import Service, authenticator, create_server
from tests.unit.booking.fakes import SERVICE_CREDENTIAL, FakeAccountTokens, settings

pytestmark = pytest.mark.timeout(30)

DEADLINE = 5.0
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Recorder:
    """The method and authorization header of every call that reached a fake servicer."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def record(self, method: str, context: Context) -> None:
        headers = dict(context.invocation_metadata() or ())
        value = headers.get("authorization")
        self.calls.append((method, value if isinstance(value, str) else None))


def reservation(reservation_id: str) -> event_pb2.Reservation:
    return event_pb2.Reservation(
        reservation_id=reservation_id, amount_cents=500, status=event_pb2.RESERVATION_STATUS_HELD
    )


class FakeAccounts(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def Charge(
        self, request: account_pb2.ChargeRequest, context: Context
    ) -> account_pb2.ChargeResponse:
        self._recorder.record("Charge", context)
        return account_pb2.ChargeResponse(
            transaction=account_pb2.Transaction(transaction_id="t-1"), balance_cents=100
        )

    async def Refund(
        self, request: account_pb2.RefundRequest, context: Context
    ) -> account_pb2.RefundResponse:
        self._recorder.record("Refund", context)
        return account_pb2.RefundResponse(transaction=account_pb2.Transaction(transaction_id="t-2"))


class FakeEvents(event_pb2_grpc.EventServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def ReserveSeats(
        self, request: event_pb2.ReserveSeatsRequest, context: Context
    ) -> event_pb2.ReserveSeatsResponse:
        self._recorder.record("ReserveSeats", context)
        return event_pb2.ReserveSeatsResponse(reservation=reservation(request.reservation_id))

    async def ConfirmReservation(
        self, request: event_pb2.ConfirmReservationRequest, context: Context
    ) -> event_pb2.ConfirmReservationResponse:
        self._recorder.record("ConfirmReservation", context)
        return event_pb2.ConfirmReservationResponse(reservation=reservation(request.reservation_id))

    async def ReleaseReservation(
        self, request: event_pb2.ReleaseReservationRequest, context: Context
    ) -> event_pb2.ReleaseReservationResponse:
        self._recorder.record("ReleaseReservation", context)
        return event_pb2.ReleaseReservationResponse(reservation=reservation(request.reservation_id))


class FakeNotifications(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def SendNotification(
        self, request: notification_pb2.SendNotificationRequest, context: Context
    ) -> notification_pb2.SendNotificationResponse:
        self._recorder.record("SendNotification", context)
        return notification_pb2.SendNotificationResponse(
            notification=notification_pb2.Notification(notification_id="n-1")
        )


def participant_services(recorder: Recorder) -> list[Service]:
    """The three participants, each open to the service credential only."""

    def table(module: Any, service: str, methods: list[str]) -> dict[str, Access]:
        full = module.DESCRIPTOR.services_by_name[service].full_name
        return {f"/{full}/{method}": Access.SERVICE for method in methods}

    accounts, events, notifications = (
        FakeAccounts(recorder),
        FakeEvents(recorder),
        FakeNotifications(recorder),
    )
    return [
        Service(
            "eventbooking.account.v1.AccountService",
            lambda s: account_pb2_grpc.add_AccountServiceServicer_to_server(accounts, s),
            access=table(account_pb2, "AccountService", ["Charge", "Refund"]),
        ),
        Service(
            "eventbooking.event.v1.EventService",
            lambda s: event_pb2_grpc.add_EventServiceServicer_to_server(events, s),
            access=table(
                event_pb2,
                "EventService",
                ["ReserveSeats", "ConfirmReservation", "ReleaseReservation"],
            ),
        ),
        Service(
            "eventbooking.notification.v1.NotificationService",
            lambda s: notification_pb2_grpc.add_NotificationServiceServicer_to_server(
                notifications, s
            ),
            access=table(notification_pb2, "NotificationService", ["SendNotification"]),
        ),
    ]


StartServer = Callable[..., Awaitable[tuple[int, Recorder]]]


@pytest.fixture
async def start_participants() -> AsyncIterator[StartServer]:
    """Start the fake participants on one server with `overrides` to its settings."""
    servers: list[grpc.aio.Server] = []

    async def start(**overrides: Any) -> tuple[int, Recorder]:
        recorder = Recorder()
        server_settings = settings(host="127.0.0.1", port=0, **overrides)
        services = participant_services(recorder)
        server, port = create_server(
            server_settings,
            services,
            health=HealthServicer(),
            authenticate=authenticator(server_settings, services, FakeAccountTokens()),
        )
        await server.start()
        servers.append(server)
        return port, recorder

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., GrpcParticipants]]:
    """GrpcParticipants with `overrides` to the booking settings, all three at `address`."""
    made: list[GrpcParticipants] = []

    def make(address: str, **overrides: Any) -> GrpcParticipants:
        client_settings: Settings = settings(**overrides)
        participants = GrpcParticipants(
            client_settings,
            account_address=address,
            event_address=address,
            notification_address=address,
        )
        made.append(participants)
        return participants

    yield make
    for participants in made:
        await participants.close()


async def call_every_participant(participants: GrpcParticipants) -> None:
    reservation_id, account_id = uuid.uuid4(), uuid.uuid4()
    await participants.reserve_seats(
        reservation_id=reservation_id,
        event_id=uuid.uuid4(),
        quantity=2,
        hold_seconds=60,
        deadline=DEADLINE,
    )
    await participants.charge(
        account_id=account_id,
        amount_cents=500,
        idempotency_key="charge-1",
        reference="booking",
        deadline=DEADLINE,
    )
    await participants.confirm_reservation(reservation_id=reservation_id, deadline=DEADLINE)
    await participants.release_reservation(reservation_id=reservation_id, deadline=DEADLINE)
    await participants.refund(idempotency_key="charge-1", reason="test", deadline=DEADLINE)
    await participants.send_notification(
        idempotency_key="notify-1",
        account_id=account_id,
        booking_id=uuid.uuid4(),
        kind="booking_confirmed",
        subject="Confirmed",
        body="Two seats.",
        deadline=DEADLINE,
    )


EVERY_CALL = [
    "ReserveSeats",
    "Charge",
    "ConfirmReservation",
    "ReleaseReservation",
    "Refund",
    "SendNotification",
]


async def test_every_participant_call_carries_the_service_credential(
    start_participants: StartServer, clients: Callable[..., GrpcParticipants]
) -> None:
    port, recorder = await start_participants()

    await call_every_participant(clients(f"127.0.0.1:{port}"))

    assert recorder.calls == [(method, f"Bearer {SERVICE_CREDENTIAL}") for method in EVERY_CALL]


async def test_a_credential_of_another_deployment_is_refused_and_reaches_no_participant(
    start_participants: StartServer, clients: Callable[..., GrpcParticipants]
) -> None:
    port, recorder = await start_participants()
    participants = clients(f"127.0.0.1:{port}", service_credential="another-deployments-credential")

    with pytest.raises(ParticipantError) as refused:
        await call_every_participant(participants)

    assert refused.value.code == "UNAUTHENTICATED"
    assert not refused.value.transient
    assert "another-deployments-credential" not in str(refused.value)
    assert recorder.calls == []


# Mutual TLS, with a CA and certificates made for the test.


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", ca_key)
    ca_issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "participants",
        server_key,
        issuer=ca_issuer,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("booking_svc", client_key, issuer=ca_issuer)
    return Pki(
        ca=_write_cert(folder / "ca.pem", ca),
        server_cert=_write_cert(folder / "server.pem", server),
        server_key=_write_key(folder / "server.key", server_key),
        client_cert=_write_cert(folder / "client.pem", client),
        client_key=_write_key(folder / "client.key", client_key),
    )


async def test_participants_are_called_over_mutual_tls_when_configured(
    start_participants: StartServer, clients: Callable[..., GrpcParticipants], pki: Pki
) -> None:
    port, recorder = await start_participants(
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )
    participants = clients(
        f"localhost:{port}",
        tls_ca_file=pki.ca,
        tls_cert_file=pki.client_cert,
        tls_key_file=pki.client_key,
    )

    await call_every_participant(participants)

    assert recorder.calls == [(method, f"Bearer {SERVICE_CREDENTIAL}") for method in EVERY_CALL]


@pytest.mark.parametrize("client", ["plaintext", "tls without a client certificate"])
async def test_a_tls_server_refuses_a_client_without_the_right_connection(
    start_participants: StartServer,
    clients: Callable[..., GrpcParticipants],
    pki: Pki,
    client: str,
) -> None:
    port, recorder = await start_participants(
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )
    overrides = {} if client == "plaintext" else {"tls_ca_file": pki.ca}
    participants = clients(f"localhost:{port}", **overrides)

    with pytest.raises(ParticipantError) as refused:
        await participants.confirm_reservation(reservation_id=uuid.uuid4(), deadline=1.0)

    assert refused.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert recorder.calls == []
