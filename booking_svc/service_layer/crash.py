"""Crash points: the booking service kills itself at a named point of a saga, for tests.

A point is named `<saga kind>.<step>.<phase>.<when>`, for example
`booking.charge_account.action.after_call` or
`booking.reserve_seats.compensation.before_call`, where <when> is

- `before_call`: the STARTED row is committed, the participant is not called yet;
- `after_call`: the participant replied, the row recording the reply is not written;
- `after_log`: the row recording the reply is committed.

The process ends with `os._exit`, so nothing is flushed, closed or rolled
back politely: the same as a SIGKILL at that instant.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable

from booking_svc.domain.saga import SagaDefinition
from booking_svc.domain.states import StepPhase

log = logging.getLogger(__name__)

WHEN = ("before_call", "after_call", "after_log")
EXIT_CODE = 86

Crash = Callable[[str], None]


def point(kind: str, step: str, phase: StepPhase, when: str) -> str:
    return f"{kind}.{step}.{phase.value.lower()}.{when}"


def every_point(definitions: Iterable[SagaDefinition]) -> list[str]:
    """Every crash point the definitions have, in step order."""
    names: list[str] = []
    for definition in definitions:
        for step in definition.steps:
            phases = [StepPhase.ACTION]
            if step.compensation is not None:
                phases.append(StepPhase.COMPENSATION)
            for phase in phases:
                names.extend(point(definition.kind, step.name, phase, when) for when in WHEN)
    return names


def parse(spec: str, definitions: Iterable[SagaDefinition]) -> frozenset[str]:
    """The points named in a comma-separated `spec`; ValueError naming any unknown one."""
    known = set(every_point(definitions))
    names = frozenset(name.strip() for name in spec.split(",") if name.strip())
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"unknown crash points {unknown}; known points: {sorted(known)}")
    return names


def exit_at(points: frozenset[str]) -> Crash:
    """A crash hook that ends the process at any of `points` and does nothing elsewhere."""

    def crash(name: str) -> None:
        if name in points:
            log.critical("crash point reached; exiting", extra={"crash_point": name})
            sys.stderr.flush()
            os._exit(EXIT_CODE)

    return crash


def never(name: str) -> None:
    """The crash hook of a service with no crash points set."""
