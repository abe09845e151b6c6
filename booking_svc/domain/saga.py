"""Saga definitions as data: steps with action, compensation, retry policy and pivot flag.

One engine runs any definition. The booking saga and the cancel saga below
are the two the service knows; both are checked when they are built, so a
definition that could not be run safely never exists.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class InvalidDefinition(ValueError):
    """A saga definition or retry policy that breaks the rules a saga engine relies on."""


class Operation(enum.Enum):
    """A participant call a step makes: one RPC of another service."""

    RESERVE_SEATS = "RESERVE_SEATS"
    RELEASE_RESERVATION = "RELEASE_RESERVATION"
    CHARGE = "CHARGE"
    REFUND = "REFUND"
    CONFIRM_RESERVATION = "CONFIRM_RESERVATION"
    SEND_NOTIFICATION = "SEND_NOTIFICATION"


class RetryKind(enum.Enum):
    # A few tries, then the saga compensates: only for steps that can be undone.
    BUDGETED = "BUDGETED"
    # Tries until it succeeds, with capped backoff; past a long limit the saga goes STUCK.
    PERSISTENT = "PERSISTENT"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a step's calls are retried on transient codes, and how long each call may take."""

    kind: RetryKind
    deadline_seconds: float
    max_backoff_seconds: float
    attempts: int | None = None
    give_up_after_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.deadline_seconds <= 0 or self.max_backoff_seconds <= 0:
            raise InvalidDefinition("a retry policy needs a positive deadline and backoff")
        if self.kind is RetryKind.BUDGETED:
            if self.attempts is None or self.attempts < 1 or self.give_up_after_seconds is not None:
                raise InvalidDefinition("a budgeted policy has attempts >= 1 and no give-up time")
        elif self.attempts is not None or (self.give_up_after_seconds or 0) <= 0:
            raise InvalidDefinition("a persistent policy has a positive give-up time, no attempts")

    @classmethod
    def budgeted(
        cls, *, attempts: int = 5, deadline_seconds: float = 5.0, max_backoff_seconds: float = 2.0
    ) -> RetryPolicy:
        """A policy for steps before the pivot: `attempts` calls, then compensate."""
        return cls(
            kind=RetryKind.BUDGETED,
            attempts=attempts,
            deadline_seconds=deadline_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )

    @classmethod
    def persistent(
        cls,
        *,
        give_up_after_seconds: float = 3600.0,
        deadline_seconds: float = 5.0,
        max_backoff_seconds: float = 10.0,
    ) -> RetryPolicy:
        """A policy for the pivot, later steps and compensations: retry until success or STUCK."""
        return cls(
            kind=RetryKind.PERSISTENT,
            give_up_after_seconds=give_up_after_seconds,
            deadline_seconds=deadline_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class Step:
    """One saga step: a participant call and, before the pivot, the call that undoes it."""

    name: str
    action: Operation
    compensation: Operation | None = None
    retry: RetryPolicy
    pivot: bool = False
    # True marks a step before the pivot that deliberately has nothing to undo.
    no_compensation: bool = False
    compensation_retry: RetryPolicy = field(default_factory=RetryPolicy.persistent)

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidDefinition("a step needs a name")
        if self.compensation is not None and self.no_compensation:
            raise InvalidDefinition(
                f"step {self.name} has a compensation and is marked as having none"
            )
        if self.compensation_retry.kind is not RetryKind.PERSISTENT:
            raise InvalidDefinition(
                f"step {self.name}: a compensation must retry until it succeeds"
            )


@dataclass(frozen=True)
class SagaDefinition:
    """An ordered list of steps with at most one pivot, checked when it is built.

    Before the pivot every step can be undone, so its calls may give up and
    the saga compensates. From the pivot on the saga only moves forward, so
    those steps have no compensation and retry until they succeed.
    """

    kind: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not self.kind or not self.steps:
            raise InvalidDefinition("a saga definition needs a kind and at least one step")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise InvalidDefinition(f"saga {self.kind} repeats a step name: {names}")
        pivots = [step.name for step in self.steps if step.pivot]
        if len(pivots) > 1:
            raise InvalidDefinition(f"saga {self.kind} has more than one pivot: {pivots}")
        pivot = self.pivot_index
        for index, step in enumerate(self.steps):
            if pivot is not None and index >= pivot:
                if step.compensation is not None:
                    raise InvalidDefinition(
                        f"saga {self.kind}: step {step.name} is at or after the pivot "
                        "and cannot have a compensation"
                    )
                if step.retry.kind is not RetryKind.PERSISTENT:
                    raise InvalidDefinition(
                        f"saga {self.kind}: step {step.name} is at or after the pivot "
                        "and must retry persistently"
                    )
            elif step.compensation is None and not step.no_compensation:
                raise InvalidDefinition(
                    f"saga {self.kind}: step {step.name} is before the pivot and needs a "
                    "compensation, or no_compensation=True"
                )

    @property
    def pivot_index(self) -> int | None:
        """The position of the pivot step, or None for a saga that can always be undone."""
        return next((i for i, step in enumerate(self.steps) if step.pivot), None)

    @property
    def forward_only(self) -> bool:
        """True when the first step is the pivot: the saga never compensates."""
        return self.pivot_index == 0

    def index(self, name: str) -> int:
        """The position of the step called `name`; KeyError for a name the saga lacks."""
        for position, step in enumerate(self.steps):
            if step.name == name:
                return position
        raise KeyError(f"saga {self.kind} has no step {name!r}")


RESERVE_STEP = "reserve_seats"
CHARGE_STEP = "charge_account"


def booking_saga(
    *,
    before_pivot: RetryPolicy | None = None,
    after_pivot: RetryPolicy | None = None,
) -> SagaDefinition:
    """The booking saga; the policies default to RetryPolicy's defaults."""
    budgeted = before_pivot or RetryPolicy.budgeted()
    persistent = after_pivot or RetryPolicy.persistent()
    return SagaDefinition(
        kind="booking",
        steps=(
            Step(
                name=RESERVE_STEP,
                action=Operation.RESERVE_SEATS,
                compensation=Operation.RELEASE_RESERVATION,
                retry=budgeted,
                compensation_retry=persistent,
            ),
            Step(
                name=CHARGE_STEP,
                action=Operation.CHARGE,
                compensation=Operation.REFUND,
                retry=budgeted,
                compensation_retry=persistent,
            ),
            Step(
                name="confirm_seats",
                action=Operation.CONFIRM_RESERVATION,
                retry=persistent,
                pivot=True,
            ),
            Step(name="notify", action=Operation.SEND_NOTIFICATION, retry=persistent),
        ),
    )


def cancel_saga(*, policy: RetryPolicy | None = None) -> SagaDefinition:
    """The cancel saga of a confirmed booking: it only moves forward, so its first step is the pivot."""
    persistent = policy or RetryPolicy.persistent()
    return SagaDefinition(
        kind="cancel",
        steps=(
            Step(
                name="release_seats",
                action=Operation.RELEASE_RESERVATION,
                retry=persistent,
                pivot=True,
            ),
            Step(name="refund", action=Operation.REFUND, retry=persistent),
            Step(name="notify", action=Operation.SEND_NOTIFICATION, retry=persistent),
        ),
    )


BOOKING_SAGA = booking_saga()
CANCEL_SAGA = cancel_saga()


def participant_key(saga_id: uuid.UUID, step_name: str) -> str:
    """The idempotency key of a step's calls: the same on every attempt and after a crash."""
    return f"{saga_id}:{step_name}"


def reservation_id(booking_saga_id: uuid.UUID) -> uuid.UUID:
    """The reservation a booking saga holds: event_svc wants a UUID, so it is derived, not stored."""
    return uuid.uuid5(booking_saga_id, RESERVE_STEP)


def charge_key(booking_saga_id: uuid.UUID) -> str:
    """The key of a booking saga's Charge, which its Refund (in either saga) names too."""
    return participant_key(booking_saga_id, CHARGE_STEP)


_RESERVATION_CALLS = frozenset(
    {Operation.RESERVE_SEATS, Operation.CONFIRM_RESERVATION, Operation.RELEASE_RESERVATION}
)
_CHARGE_CALLS = frozenset({Operation.CHARGE, Operation.REFUND})


def call_key(
    operation: Operation, *, saga_id: uuid.UUID, booking_saga_id: uuid.UUID, step_name: str
) -> str:
    """The id or key one participant call carries, for either saga.

    Reservation and charge calls name what the booking saga created, so a
    cancel saga releases and refunds exactly that; a notification is keyed
    by its own saga and step, so a booking's confirmation and its
    cancellation are two notifications.
    """
    if operation in _RESERVATION_CALLS:
        return str(reservation_id(booking_saga_id))
    if operation in _CHARGE_CALLS:
        return charge_key(booking_saga_id)
    return participant_key(saga_id, step_name)


DEFINITIONS = {definition.kind: definition for definition in (BOOKING_SAGA, CANCEL_SAGA)}
