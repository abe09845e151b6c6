"""What a saga does next, decided from its definition and its log alone.

`plan` is pure: the engine calls it after every row it writes and after a
restart, so a saga resumed by another process picks up exactly where the
log says it was. The rules:

- RUNNING walks the steps forward. A step whose action succeeded is
  skipped; the first other step is run again, with the same key and the
  next attempt number, because its last call may never have been made.
- Up to and including the pivot, a refused call (FAILED), a spent retry
  budget or a cancel sends the saga back: StartCompensating. A cancel
  waits while the pivot is in flight, since the pivot may already hold.
- After the pivot the saga only goes forward; a refused call there parks
  it STUCK for an operator. A forward-only saga (its first step is the
  pivot) never compensates.
- COMPENSATING walks backwards over every step whose action may have
  taken effect and that has a compensation: a started call may have, so it
  is undone even if it failed or timed out, unless the only call made was
  refused (a refusal applies nothing). A step sold out or short of funds on
  its first try therefore costs no compensating call.

An operator's retry of a STUCK saga appends a RETRYING row to the failed
track and resumes in `resume_status`; the planner then runs that track again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from booking_svc.domain.log import (
    LogEntry,
    LogMismatch,
    Progress,
    Track,
    needs_undoing,
    read_log,
)
from booking_svc.domain.saga import RetryKind, SagaDefinition, Step
from booking_svc.domain.states import SagaStatus, StepPhase


@dataclass(frozen=True)
class RunAction:
    """Write a STARTED row for `attempt`, then call the step's action."""

    step: Step
    attempt: int


@dataclass(frozen=True)
class RunCompensation:
    """Write a STARTED row for `attempt`, then call the step's compensation."""

    step: Step
    attempt: int


@dataclass(frozen=True)
class Complete:
    """Every step succeeded: RUNNING -> COMPLETED."""


@dataclass(frozen=True)
class Compensated:
    """Everything that may have happened is undone: COMPENSATING -> COMPENSATED."""


@dataclass(frozen=True)
class StartCompensating:
    """RUNNING -> COMPENSATING, for `reason`."""

    reason: str


@dataclass(frozen=True)
class Stuck:
    """A call was refused where the saga cannot go back: park it STUCK for an operator."""

    reason: str


Move = RunAction | RunCompensation | Complete | Compensated | StartCompensating | Stuck


def plan(
    definition: SagaDefinition,
    entries: Sequence[LogEntry],
    *,
    status: SagaStatus,
    cancel_requested: bool,
) -> Move:
    """The engine's next move for a saga in `status` whose log so far is `entries`.

    Raises LogMismatch when the log disagrees with the definition or with
    `status`, and ValueError for a status that has no next move.
    """
    return next_move(
        definition, read_log(definition, entries), status=status, cancel_requested=cancel_requested
    )


def next_move(
    definition: SagaDefinition,
    progress: Progress,
    *,
    status: SagaStatus,
    cancel_requested: bool,
) -> Move:
    """`plan` for a log already read into `progress`: what a running saga keeps between rows."""
    if status is SagaStatus.RUNNING:
        return _forward(definition, progress, cancel_requested=cancel_requested)
    if status is SagaStatus.COMPENSATING:
        return _backward(definition, progress)
    raise ValueError(f"a {status.value} saga has no next move")


def can_compensate(definition: SagaDefinition, entries: Sequence[LogEntry]) -> bool:
    """True while the saga may still be undone: an operator may compensate it only then."""
    return _can_compensate(definition, read_log(definition, entries))


def resume_status(entries: Sequence[LogEntry]) -> SagaStatus:
    """The status an operator's retry gives a STUCK saga: the direction its log was going."""
    if any(entry.phase is StepPhase.COMPENSATION for entry in entries):
        return SagaStatus.COMPENSATING
    return SagaStatus.RUNNING


def _can_compensate(definition: SagaDefinition, progress: Progress) -> bool:
    pivot = definition.pivot_index
    if pivot is None:
        return True
    return not definition.forward_only and not progress.actions[pivot].succeeded


def _forward(definition: SagaDefinition, progress: Progress, *, cancel_requested: bool) -> Move:
    if progress.compensating:
        raise LogMismatch(f"saga {definition.kind} is RUNNING but its log shows compensation")
    for index, track in enumerate(progress.actions):
        if not track.succeeded:
            return _next_action(definition, index, track=track, cancel_requested=cancel_requested)
    return Complete()


def _next_action(
    definition: SagaDefinition, index: int, *, track: Track, cancel_requested: bool
) -> Move:
    step = definition.steps[index]
    pivot = definition.pivot_index
    past_pivot = pivot is not None and index > pivot
    if definition.forward_only or past_pivot:
        if track.failed:
            return Stuck(f"{step.name} was refused and saga {definition.kind} cannot go back")
        return RunAction(step, track.attempts + 1)
    if track.failed:
        return StartCompensating(f"{step.name} failed")
    # Counting STARTED rows makes crashes spend the budget too, so a crash loop ends.
    if step.retry.kind is RetryKind.BUDGETED and track.attempts >= (step.retry.attempts or 0):
        return StartCompensating(f"{step.name} spent its {track.attempts} attempts")
    # A pivot call in flight may already have taken effect: let it finish, then cancel forward.
    if cancel_requested and not (index == pivot and track.started):
        return StartCompensating("cancel requested")
    return RunAction(step, track.attempts + 1)


def _backward(definition: SagaDefinition, progress: Progress) -> Move:
    if not _can_compensate(definition, progress):
        raise LogMismatch(f"saga {definition.kind} is COMPENSATING but cannot be undone")
    for index in reversed(range(len(definition.steps))):
        step = definition.steps[index]
        track = progress.compensations[index]
        if step.compensation is None or track.succeeded:
            continue
        if not needs_undoing(progress.actions[index], track):
            continue
        if track.failed:
            return Stuck(f"the compensation of {step.name} was refused")
        return RunCompensation(step, track.attempts + 1)
    return Compensated()
