"""A saga log written the way the engine writes it, and an engine double that drives `plan`.

The double applies each planned move to an in-memory log with an outcome
the test chooses: success, a business refusal, a transient failure, or a
crash right after the STARTED row. Status changes go through the real
transition table, so an illegal move fails the test.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from booking_svc.domain.log import LogEntry
from booking_svc.domain.planner import (
    Compensated,
    Complete,
    Move,
    RunAction,
    RunCompensation,
    StartCompensating,
    Stuck,
    plan,
    resume_status,
)
from booking_svc.domain.saga import SagaDefinition, Step
from booking_svc.domain.states import SagaStatus, StepEvent, StepPhase, transition

START = datetime(2030, 1, 1, tzinfo=UTC)


class Outcome(enum.Enum):
    SUCCESS = "SUCCESS"
    REFUSED = "REFUSED"
    TRANSIENT = "TRANSIENT"
    CRASH = "CRASH"


# The row each outcome leaves after STARTED; a crash leaves none.
_RESULT_ROWS: Mapping[Outcome, tuple[StepEvent, str] | None] = {
    Outcome.SUCCESS: (StepEvent.SUCCEEDED, "OK"),
    Outcome.REFUSED: (StepEvent.FAILED, "FAILED_PRECONDITION"),
    Outcome.TRANSIENT: (StepEvent.RETRYING, "UNAVAILABLE"),
    Outcome.CRASH: None,
}


@dataclass
class SagaLog:
    """An append-only log for one saga, with seq and time filled in."""

    saga_id: uuid.UUID = field(default_factory=uuid.uuid4)
    entries: list[LogEntry] = field(default_factory=list)

    def append(
        self,
        step: str,
        event: StepEvent,
        *,
        phase: StepPhase = StepPhase.ACTION,
        attempt: int,
        code: str = "",
    ) -> LogEntry:
        seq = len(self.entries) + 1
        entry = LogEntry(
            seq=seq,
            saga_id=self.saga_id,
            step=step,
            phase=phase,
            event=event,
            attempt=attempt,
            code=code,
            message="",
            at=START + timedelta(seconds=seq),
        )
        self.entries.append(entry)
        return entry

    def call(
        self, step: str, outcome: Outcome, *, phase: StepPhase = StepPhase.ACTION, attempt: int = 1
    ) -> None:
        """One try of a call: its STARTED row and the row its outcome leaves."""
        self.append(step, StepEvent.STARTED, phase=phase, attempt=attempt)
        result = _RESULT_ROWS[outcome]
        if result is not None:
            self.append(step, result[0], phase=phase, attempt=attempt, code=result[1])

    def started(self, step: str, *, phase: StepPhase = StepPhase.ACTION) -> bool:
        return any(
            e.step == step and e.phase is phase and e.event is StepEvent.STARTED
            for e in self.entries
        )

    def rows(self, step: str, phase: StepPhase, event: StepEvent) -> list[LogEntry]:
        return [e for e in self.entries if e.step == step and e.phase is phase and e.event is event]


Outcomes = Callable[[Step, StepPhase], Outcome]


def scripted(script: Mapping[tuple[str, StepPhase], Sequence[Outcome]]) -> Outcomes:
    """Outcomes per (step, phase), taken in order; SUCCESS once a script runs out."""
    queues: dict[tuple[str, StepPhase], Iterator[Outcome]] = {
        key: iter(values) for key, values in script.items()
    }
    return lambda step, phase: next(queues.get((step.name, phase), iter(())), Outcome.SUCCESS)


def stream(outcomes: Iterable[Outcome]) -> Outcomes:
    """One outcome per call whatever the step; SUCCESS once they run out."""
    remaining = iter(outcomes)
    return lambda step, phase: next(remaining, Outcome.SUCCESS)


def always_succeed(step: Step, phase: StepPhase) -> Outcome:
    return Outcome.SUCCESS


@dataclass
class Engine:
    """Runs `plan` the way the real engine does, against a `SagaLog`."""

    definition: SagaDefinition
    outcomes: Outcomes = always_succeed
    log: SagaLog = field(default_factory=SagaLog)
    status: SagaStatus = SagaStatus.RUNNING
    cancel_requested: bool = False
    moves: list[Move] = field(default_factory=list)

    def next_move(self) -> Move:
        """Plan one move, apply it, and return it."""
        move = plan(
            self.definition,
            self.log.entries,
            status=self.status,
            cancel_requested=self.cancel_requested,
        )
        self.moves.append(move)
        match move:
            case RunAction(step=step, attempt=attempt):
                self.log.call(step.name, self.outcomes(step, StepPhase.ACTION), attempt=attempt)
            case RunCompensation(step=step, attempt=attempt):
                phase = StepPhase.COMPENSATION
                self.log.call(step.name, self.outcomes(step, phase), phase=phase, attempt=attempt)
            case StartCompensating():
                self.status = transition(self.status, SagaStatus.COMPENSATING)
            case Complete():
                self.status = transition(self.status, SagaStatus.COMPLETED)
            case Compensated():
                self.status = transition(self.status, SagaStatus.COMPENSATED)
            case Stuck():
                self.status = transition(self.status, SagaStatus.STUCK)
        return move

    def run(self, *, limit: int = 100, operator_retries: bool = False) -> list[Move]:
        """Moves until the saga is final (or STUCK, unless an operator retries it)."""
        start = len(self.moves)
        while len(self.moves) - start < limit:
            move = self.next_move()
            if isinstance(move, Complete | Compensated):
                break
            if isinstance(move, Stuck):
                if not operator_retries:
                    break
                self.operator_retry()
        return self.moves[start:]

    def operator_retry(self) -> None:
        """What `bookingctl saga retry` does: a RETRYING row on the refused track, then resume."""
        failed = self.log.entries[-1]
        assert failed.event is StepEvent.FAILED
        self.log.append(failed.step, StepEvent.RETRYING, phase=failed.phase, attempt=failed.attempt)
        self.status = transition(self.status, resume_status(self.log.entries))
