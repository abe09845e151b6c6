"""The append-only saga step log, and how it is read back against a definition.

Each (step, phase) pair of a saga has its own track of rows. A track reads
STARTED, then SUCCEEDED, FAILED or RETRYING for that attempt, or nothing at
all when the process died mid-call; the next attempt starts with a new
STARTED row whose attempt number is one higher. An operator's retry adds a
RETRYING row with code OPERATOR to a track that was refused or gave up. STARTED is written before
the call, so a track that was STARTED may have taken effect, unless its one
and only call was refused: a participant that refuses applies none of the call.

`read_log` replays the rows and refuses any that the definition or the
track grammar does not allow: the planner never guesses around a bad log.
`advance` reads one more row the same way, for a saga that keeps its tracks.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from booking_svc.domain.saga import SagaDefinition
from booking_svc.domain.states import StepEvent, StepPhase


class LogMismatch(Exception):
    """The log disagrees with the saga definition or its own grammar: a bug, never a guess."""


@dataclass(frozen=True)
class LogEntry:
    """One row of the log.

    `attempt` is the try the row belongs to: a STARTED row opens it, and the
    row that reports its outcome repeats it. `code` is the gRPC status name
    of the reply, "OK" on success.
    """

    seq: int
    saga_id: uuid.UUID
    step: str
    phase: StepPhase
    event: StepEvent
    attempt: int
    code: str
    message: str
    at: datetime
    # The span that wrote the row, when tracing was on: how a resumed saga links back.
    trace_id: str | None = None
    span_id: str | None = None


E = StepEvent

# The codes with which a participant refuses a call and applies none of it. UNKNOWN,
# INTERNAL, CANCELLED and DATA_LOSS are not here: the call may have got part way.
REFUSAL_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
    }
)

# The code of the RETRYING row an operator's retry writes to reopen a track.
OPERATOR = "OPERATOR"

# What may follow the last row of a track. FAILED is followed only by an operator's
# RETRYING row; nothing follows SUCCEEDED.
_FOLLOWS: Mapping[StepEvent | None, frozenset[StepEvent]] = {
    None: frozenset({E.STARTED}),
    # STARTED again: the process died mid-call and the step was resumed.
    E.STARTED: frozenset({E.STARTED, E.SUCCEEDED, E.FAILED, E.RETRYING}),
    E.RETRYING: frozenset({E.STARTED}),
    E.FAILED: frozenset({E.RETRYING}),
    E.SUCCEEDED: frozenset(),
}


@dataclass(frozen=True)
class Track:
    """What the log says so far about one step's action or compensation."""

    attempts: int = 0
    last: StepEvent | None = None
    # The gRPC status name of the last row.
    code: str | None = None

    @property
    def started(self) -> bool:
        """True once a call was made or may have been made."""
        return self.attempts > 0

    @property
    def may_have_applied(self) -> bool:
        """True once a call may have taken effect: not while the only call made was refused.

        A refusal after an earlier attempt proves nothing about that attempt,
        which may still arrive late or have been applied before its reply was lost.
        """
        refused_once = self.attempts == 1 and self.failed and self.code in REFUSAL_CODES
        return self.started and not refused_once

    @property
    def succeeded(self) -> bool:
        return self.last is StepEvent.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.last is StepEvent.FAILED


@dataclass(frozen=True)
class Progress:
    """Every step's action and compensation track, by step position."""

    actions: tuple[Track, ...]
    compensations: tuple[Track, ...]

    @property
    def compensating(self) -> bool:
        """True once any compensation was started."""
        return any(track.started for track in self.compensations)


def read_log(definition: SagaDefinition, entries: Sequence[LogEntry]) -> Progress:
    """Replay `entries` (in seq order) into per-step tracks; LogMismatch if any row is wrong."""
    steps = definition.steps
    actions = [Track()] * len(steps)
    compensations = [Track()] * len(steps)
    for position, entry in enumerate(entries):
        if position and entries[0].saga_id != entry.saga_id:
            raise LogMismatch(
                f"{_where(entry)} belongs to saga {entry.saga_id}, not {entries[0].saga_id}"
            )
        if position and entries[position - 1].seq >= entry.seq:
            raise LogMismatch(f"{_where(entry)} is out of order")
        index, track = _read_row(definition, entry, actions=actions, compensations=compensations)
        (actions if entry.phase is StepPhase.ACTION else compensations)[index] = track
    return Progress(actions=tuple(actions), compensations=tuple(compensations))


def advance(progress: Progress, definition: SagaDefinition, entry: LogEntry) -> Progress:
    """`progress` with `entry`, the next row of the same saga, read into it as `read_log` would.

    LogMismatch if the row is wrong; the caller vouches for its saga and its order.
    """
    actions, compensations = progress.actions, progress.compensations
    index, track = _read_row(definition, entry, actions=actions, compensations=compensations)
    if entry.phase is StepPhase.ACTION:
        actions = (*actions[:index], track, *actions[index + 1 :])
    else:
        compensations = (*compensations[:index], track, *compensations[index + 1 :])
    return Progress(actions=actions, compensations=compensations)


def _where(entry: LogEntry) -> str:
    """How an error names a row; built only for an error."""
    return f"log row {entry.seq} ({entry.step} {entry.phase.value} {entry.event.value})"


def _read_row(
    definition: SagaDefinition,
    entry: LogEntry,
    *,
    actions: Sequence[Track],
    compensations: Sequence[Track],
) -> tuple[int, Track]:
    """The position of the row's step and its track with the row; LogMismatch if it is wrong."""
    try:
        index = definition.index(entry.step)
    except KeyError:
        raise LogMismatch(f"{_where(entry)}: saga {definition.kind} has no such step") from None
    if entry.phase is StepPhase.ACTION:
        _check_action(definition, index, entry, actions=actions, compensations=compensations)
        return index, _advance(actions[index], entry)
    _check_compensation(definition, index, entry, actions=actions, compensations=compensations)
    return index, _advance(compensations[index], entry)


def _check_action(
    definition: SagaDefinition,
    index: int,
    entry: LogEntry,
    *,
    actions: Sequence[Track],
    compensations: Sequence[Track],
) -> None:
    if any(track.started for track in compensations):
        raise LogMismatch(f"{_where(entry)}: an action after compensation began")
    waiting = [definition.steps[i].name for i in range(index) if not actions[i].succeeded]
    if waiting:
        raise LogMismatch(f"{_where(entry)}: earlier steps have not succeeded: {waiting}")


def _check_compensation(
    definition: SagaDefinition,
    index: int,
    entry: LogEntry,
    *,
    actions: Sequence[Track],
    compensations: Sequence[Track],
) -> None:
    where = _where(entry)
    if definition.steps[index].compensation is None:
        raise LogMismatch(f"{where}: the step has no compensation")
    if not actions[index].started:
        raise LogMismatch(f"{where}: the step's action never started")
    pivot = definition.pivot_index
    if pivot is not None and actions[pivot].succeeded:
        raise LogMismatch(f"{where}: the pivot had succeeded")
    # Compensations run in reverse, so every later step that needs one must be undone first.
    pending = [
        step.name
        for later, step in enumerate(definition.steps)
        if later > index
        and step.compensation is not None
        and needs_undoing(actions[later], compensations[later])
        and not compensations[later].succeeded
    ]
    if pending:
        raise LogMismatch(f"{where}: later steps are not compensated yet: {pending}")


def needs_undoing(action: Track, compensation: Track) -> bool:
    """True when a step's action may have taken effect, or its undoing has already begun.

    A compensation begun is finished even for a refused action: a log written
    before refusals were known to apply nothing may hold one.
    """
    return action.may_have_applied or compensation.started


def _advance(track: Track, entry: LogEntry) -> Track:
    # An operator may also reopen a track whose retries gave up (its last row is RETRYING).
    reopened = entry.code == OPERATOR and track.last is E.RETRYING and entry.event is E.RETRYING
    if entry.event not in _FOLLOWS[track.last] and not reopened:
        last = track.last.value if track.last else "nothing"
        raise LogMismatch(f"{_where(entry)} cannot follow {last}")
    if entry.event is StepEvent.STARTED:
        expected = track.attempts + 1
        attempts = expected
    else:
        expected = attempts = track.attempts
    if entry.attempt != expected:
        raise LogMismatch(f"{_where(entry)} has attempt {entry.attempt}, expected {expected}")
    return Track(attempts=attempts, last=entry.event, code=entry.code)
