"""Channels between services: TLS when configured, client spans, and the service credential.

A service that calls another uses `channel` for the connection and
`service_metadata` on each participant call. Services other than
account_svc check user tokens through `account_token_lookup`, which asks
account_svc and remembers answers for a short while.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import grpc

from eventbooking import auth, telemetry
from eventbooking.account.v1 import account_pb2, account_pb2_grpc
from eventbooking.errors import Unavailable
from eventbooking.settings import ServiceSettings
from eventbooking.tls import TlsFiles

log = logging.getLogger(__name__)

# Reconnect quickly after a neighbour restarts; gRPC's default backoff grows to 120 s.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
LOOKUP_DEADLINE_SECONDS = 2.0


def credentials(settings: ServiceSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for calls to other services, or None for plaintext.

    With tls_ca_file the servers are verified against that CA; a service
    that has its own certificate presents it too, for mutual TLS.
    """
    if settings.tls_ca_file is None:
        return None
    return TlsFiles(
        settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file
    ).credentials()


def channel(address: str, settings: ServiceSettings, *, traced: bool = True) -> grpc.aio.Channel:
    """A channel to another service, made inside the running event loop.

    `traced` gives every call a client span through an interceptor; a caller
    that passes False makes its calls with telemetry.traced_call instead.
    """
    interceptors = telemetry.client_interceptors() if traced else None
    tls = credentials(settings)
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.secure_channel(address, tls, options=CHANNEL_OPTIONS, interceptors=interceptors)


def service_metadata(settings: ServiceSettings) -> Sequence[tuple[str, str]]:
    """The metadata that proves a call comes from a service of this deployment."""
    return (("authorization", f"Bearer {settings.secret('service_credential')}"),)


def account_token_lookup(address: str, settings: ServiceSettings) -> auth.TokenLookup:
    """A cached lookup of user tokens through AccountService.AuthenticateToken."""
    metadata = service_metadata(settings)
    stub: account_pb2_grpc.AccountServiceAsyncStub | None = None

    async def lookup(token: str) -> uuid.UUID | None:
        nonlocal stub
        if stub is None:
            stub = account_pb2_grpc.AccountServiceStub(channel(address, settings))
        try:
            reply = await stub.AuthenticateToken(
                account_pb2.AuthenticateTokenRequest(token=token),
                metadata=metadata,
                timeout=LOOKUP_DEADLINE_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            # The code says what is wrong (PERMISSION_DENIED: this deployment's credentials differ).
            log.warning("token check failed at account_svc", extra={"code": err.code().name})
            raise Unavailable("the account service cannot check tokens right now") from None
        return uuid.UUID(reply.account_id)

    return auth.TokenCache(lookup)
