"""Who may call what: bearer tokens, the admin token and the service credential.

Every RPC of a service has an `Access` in one table the service hands to
`AuthInterceptor`. The interceptor reads `authorization: Bearer <token>`,
decides who the caller is, refuses what the table forbids
(UNAUTHENTICATED without a valid token, PERMISSION_DENIED for a known
caller without the right), and leaves the caller in a context variable, so
servicers check ownership with `require_account`. Tokens never reach a log
line, a span or an error message: messages name the problem, not the token.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from eventbooking.errors import PermissionDenied, Unauthenticated


class Role(enum.Enum):
    ACCOUNT = "account"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True)
class Caller:
    role: Role
    account_id: uuid.UUID | None = None


class Access(enum.Enum):
    # Anyone, with no token: creating an account, health, reflection.
    PUBLIC = "public"
    # An account's token (the servicer checks it owns what it names) or the admin token.
    USER = "user"
    ADMIN = "admin"
    # The service credential only: participant RPCs.
    SERVICE = "service"


# Health and reflection stay open: probes and `grpcurl list` carry no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

TokenLookup = Callable[[str], Awaitable[uuid.UUID | None]]

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current() -> Caller | None:
    """The caller of the RPC being served, or None for a PUBLIC one."""
    return _caller.get()


def require_account(account_id: uuid.UUID) -> Caller:
    """The caller, if it is that account or the admin; PERMISSION_DENIED otherwise."""
    caller = current()
    if caller is None:
        raise Unauthenticated("this call needs an authorization: Bearer <api token> header")
    if caller.role is Role.ADMIN or caller.account_id == account_id:
        return caller
    raise PermissionDenied(f"this token may not act for account {account_id}")


def require_admin() -> Caller:
    """The caller, if it holds the admin token; PERMISSION_DENIED otherwise."""
    caller = current()
    if caller is None:
        raise Unauthenticated("this call needs an authorization: Bearer <admin token> header")
    if caller.role is not Role.ADMIN:
        raise PermissionDenied("only an operator holding the admin token may do this")
    return caller


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header; None without the header."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization header must read 'Bearer <token>'")
            return token.strip()
    return None


def token_key(token: str) -> str:
    """How a token is stored and cached: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Turns a bearer token into a caller: the admin, a service, or an account."""

    def __init__(self, *, admin_token: str, service_credential: str, lookup: TokenLookup) -> None:
        self._admin = admin_token.encode()
        self._service = service_credential.encode()
        self._lookup = lookup

    async def caller(self, token: str) -> Caller:
        presented = token.encode()
        if hmac.compare_digest(presented, self._admin):
            return Caller(Role.ADMIN)
        if hmac.compare_digest(presented, self._service):
            return Caller(Role.SERVICE)
        account_id = await self._lookup(token)
        if account_id is None:
            raise Unauthenticated("the token is not valid; it may have been rotated")
        return Caller(Role.ACCOUNT, account_id)


_HOLDER = {
    Role.ACCOUNT: "an account's token",
    Role.ADMIN: "the admin token",
    Role.SERVICE: "the service credential",
}


def authorize(access: Access, caller: Caller | None) -> None:
    """Refuse `caller` unless `access` lets it in."""
    if access is Access.PUBLIC:
        return
    if caller is None:
        raise Unauthenticated("this call needs an authorization: Bearer <token> header")
    if access is Access.USER and caller.role in (Role.ACCOUNT, Role.ADMIN):
        return
    if access is Access.ADMIN and caller.role is Role.ADMIN:
        return
    if access is Access.SERVICE and caller.role is Role.SERVICE:
        return
    raise PermissionDenied(f"{_HOLDER[caller.role]} may not make this call")


class TokenCache:
    """Account ids of recently seen tokens, for services that ask account_svc.

    Keyed by the token's hash; entries live `ttl` seconds, so a rotated token
    stops working everywhere within that time.
    """

    def __init__(self, lookup: TokenLookup, *, ttl: float = 30.0, size: int = 10_000) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, tuple[float, uuid.UUID | None]] = OrderedDict()

    async def __call__(self, token: str) -> uuid.UUID | None:
        key = token_key(token)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            self._entries.move_to_end(key)
            return hit[1]
        account_id = await self._lookup(token)
        # Unknown tokens are remembered briefly too, so a flood of bad ones stays cheap.
        self._entries[key] = (now + (self._ttl if account_id else min(self._ttl, 2.0)), account_id)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return account_id


Handler = grpc.RpcMethodHandler


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks every call against the service's access table before the servicer runs."""

    def __init__(self, authenticator: Authenticator, policy: Mapping[str, Access]) -> None:
        self._authenticator = authenticator
        self._policy = policy

    def access(self, method: str) -> Access:
        if method.startswith(OPEN_PREFIXES):
            return Access.PUBLIC
        # A method missing from the table is closed to all but the admin, never open.
        return self._policy.get(method, Access.ADMIN)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        access = self.access(handler_call_details.method)
        # Open methods run with no caller, whatever token came with them.
        if handler is None or access is Access.PUBLIC:
            return handler
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._admit(access, metadata)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._admit(access, metadata)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # No contract has client streams; one that is not open is refused (UNIMPLEMENTED).
        return None

    async def _admit(
        self, access: Access, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> None:
        token = bearer(metadata)
        caller = await self._authenticator.caller(token) if token is not None else None
        authorize(access, caller)
        _caller.set(caller)
