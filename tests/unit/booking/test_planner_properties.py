"""Properties of the planner over random runs: every saga ends, and undoes exactly what it should.

Each example drives a saga with a random stream of call outcomes (success,
refusal, transient failure, crash after STARTED), an optional cancel at a
random moment, and an operator who retries whatever gets STUCK.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from booking_svc.domain.planner import Compensated, Complete, Stuck
from booking_svc.domain.saga import BOOKING_SAGA, CANCEL_SAGA, RetryKind, SagaDefinition
from booking_svc.domain.states import SagaStatus, StepEvent, StepPhase
from tests.unit.booking.sim import Engine, Outcome, stream

ACTION, COMPENSATION = StepPhase.ACTION, StepPhase.COMPENSATION


def move_bound(definition: SagaDefinition, outcomes: list[Outcome]) -> int:
    """Each outcome costs at most a run and a STUCK; then one successful run per track, two more."""
    return 2 * len(outcomes) + 2 * len(definition.steps) + 2


@settings(max_examples=400, deadline=None)
@given(
    definition=st.sampled_from([BOOKING_SAGA, CANCEL_SAGA]),
    outcomes=st.lists(st.sampled_from(Outcome), max_size=40),
    cancel_at=st.none() | st.integers(min_value=0, max_value=30),
)
def test_every_saga_ends_having_undone_exactly_what_it_started(
    definition: SagaDefinition, outcomes: list[Outcome], cancel_at: int | None
) -> None:
    engine = Engine(definition, outcomes=stream(outcomes))
    pivot = definition.steps[definition.pivot_index or 0]
    cancelled_before_pivot = False

    for _ in range(move_bound(definition, outcomes)):
        if cancel_at is not None and len(engine.moves) == cancel_at:
            engine.cancel_requested = True
            cancelled_before_pivot = not engine.log.started(pivot.name)
        move = engine.next_move()
        if isinstance(move, Complete | Compensated):
            break
        if isinstance(move, Stuck):
            engine.operator_retry()

    assert engine.status in {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    log = engine.log
    entries = log.entries
    for position, entry in enumerate(entries):
        if entry.phase is COMPENSATION:
            assert any(
                e.step == entry.step and e.phase is ACTION and e.event is StepEvent.STARTED
                for e in entries[:position]
            ), f"{entry.step} compensated though its action never started"
    for step in definition.steps:
        if step.retry.kind is RetryKind.BUDGETED:
            assert len(log.rows(step.name, ACTION, StepEvent.STARTED)) <= (step.retry.attempts or 0)

    compensation_rows = [e for e in entries if e.phase is COMPENSATION]
    if log.rows(pivot.name, ACTION, StepEvent.SUCCEEDED):
        assert not compensation_rows
        assert engine.status is SagaStatus.COMPLETED
    if definition.forward_only:
        assert engine.status is SagaStatus.COMPLETED
    elif cancelled_before_pivot:
        assert engine.status is SagaStatus.COMPENSATED

    for step in definition.steps:
        undone = log.rows(step.name, COMPENSATION, StepEvent.SUCCEEDED)
        action_rows = [e for e in entries if e.step == step.name and e.phase is ACTION]
        # A refusal applies nothing: a step whose one call was refused has nothing to undo.
        refused_once = (
            len(log.rows(step.name, ACTION, StepEvent.STARTED)) == 1
            and action_rows[-1].event is StepEvent.FAILED
        )
        if engine.status is SagaStatus.COMPLETED:
            assert len(log.rows(step.name, ACTION, StepEvent.SUCCEEDED)) == 1
            assert not undone
        elif step.compensation is not None and log.started(step.name) and not refused_once:
            assert len(undone) == 1, f"{step.name} may have applied, so it is undone exactly once"
        else:
            assert not log.rows(step.name, COMPENSATION, StepEvent.STARTED)
