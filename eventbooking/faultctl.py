"""A small typed client of one server's FaultService, for tools that inject faults at runtime.

Each server has its own FaultService (proto/eventbooking/faults/v1), admin-only,
answering only when the server started with `<PREFIX>FAULT_CONTROL=true`. This
client speaks to one address with the admin token, and turns the wire form into
the `fault_injection.Rule` values that the settings use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc

from eventbooking.fault_injection import Rule, rule_from_proto, rule_to_proto
from eventbooking.faults.v1 import faults_pb2 as pb
from eventbooking.faults.v1 import faults_pb2_grpc as pb_grpc

# Reconnect quickly to a server that was just restarted; gRPC's default backoff grows to 120 s.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class RuleStatus:
    """One live rule, how many calls it fired on, and for a count rule how many remain."""

    rule: Rule
    fired: int
    remaining: int | None


class FaultControl:
    """FaultService at one address over grpc.aio; every call carries the admin token.

    Make it inside the running event loop; close it (or use `async with`) when done.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.address = address
        self._channel = (
            grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
            if credentials
            else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.FaultServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def __aenter__(self) -> FaultControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def set(self, rules: Sequence[Rule], *, seed: int) -> None:
        """Replace every rule of the server with `rules`; its draws restart from `seed`."""
        request = pb.SetFaultsRequest(rules=[rule_to_proto(rule) for rule in rules], seed=seed)
        await self._stub.SetFaults(request, timeout=self._timeout, metadata=self._metadata)

    async def list(self) -> list[RuleStatus]:
        """The server's rules now, in order, with how often each fired since they were set."""
        reply = await self._stub.ListFaults(
            pb.ListFaultsRequest(), timeout=self._timeout, metadata=self._metadata
        )
        return [
            RuleStatus(
                rule=rule_from_proto(status.rule, index),
                fired=status.fired,
                remaining=status.remaining
                if status.rule.WhichOneof("trigger") == "count"
                else None,
            )
            for index, status in enumerate(reply.rules, start=1)
        ]

    async def clear(self) -> int:
        """Remove every rule of the server; return how many there were."""
        reply = await self._stub.ClearFaults(
            pb.ClearFaultsRequest(), timeout=self._timeout, metadata=self._metadata
        )
        return reply.cleared
