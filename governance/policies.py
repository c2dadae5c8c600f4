"""Pure rules of the approval workflow: transitions, applicable stages, quorums and what one
decision does to a proposal.

Nothing here touches the database; the services feed plain values in (the policy snapshot, the
decisions so far) and write what comes out.
"""

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

from governance.exceptions import InvalidTransition, PolicyInvalid
from governance.models import DECIDING_ROLES, Decision, OperationKind, ProposalState

S = ProposalState

# action -> (states it may start from, state it leads to). The single transition table.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "edit": (frozenset({S.DRAFT, S.CHANGES_REQUESTED}), ""),
    "submit": (frozenset({S.DRAFT, S.CHANGES_REQUESTED}), S.IN_REVIEW),
    "withdraw": (frozenset({S.DRAFT, S.CHANGES_REQUESTED, S.IN_REVIEW, S.APPROVED}), S.WITHDRAWN),
    "advance": (frozenset({S.IN_REVIEW}), S.IN_REVIEW),
    "approve": (frozenset({S.IN_REVIEW}), S.APPROVED),
    "reject": (frozenset({S.IN_REVIEW}), S.REJECTED),
    "request_changes": (frozenset({S.IN_REVIEW}), S.CHANGES_REQUESTED),
    "execute": (frozenset({S.APPROVED}), S.EXECUTED),
    "expire": (frozenset({S.APPROVED}), S.EXPIRED),
}


def transition(action: str, state: str) -> str:
    """Return the state ``action`` leads to from ``state``, or raise ``InvalidTransition``.

    For ``edit`` (which changes no state) the current state is returned.
    """
    sources, target = TRANSITIONS[action]
    if state not in sources:
        allowed = ", ".join(sorted(sources))
        raise InvalidTransition(
            f"Cannot {action.replace('_', ' ')} a proposal that is {state}; only from: {allowed}.",
            context={"action": action, "state": state},
        )
    return target or state


class StageLike(Protocol):
    order: int
    name: str
    permission: str
    quorum: int
    applies_from_usd: Decimal
    kinds: Sequence[str]


T = TypeVar("T", bound=StageLike)


@dataclass(frozen=True)
class StageSpec:
    """A stage as plain values, for drafting policies and for tests."""

    order: int
    name: str
    permission: str
    quorum: int
    applies_from_usd: Decimal = Decimal("0")
    # The operation kinds it applies to; empty for every kind.
    kinds: tuple[str, ...] = ()


def applies_to(stage: StageLike, kind: str) -> bool:
    """Whether ``stage`` decides operations of ``kind`` (a stage naming no kinds decides all)."""
    return not stage.kinds or kind in stage.kinds


def applicable_stages(
    stages: Iterable[T], notional_usd: Decimal, kind: str = OperationKind.BUY
) -> list[T]:
    """The stages that apply to a proposal of ``kind`` and ``notional_usd`` (threshold
    inclusive), in order."""
    return sorted(
        (
            stage
            for stage in stages
            if stage.applies_from_usd <= notional_usd and applies_to(stage, kind)
        ),
        key=lambda stage: stage.order,
    )


def quorum_reached(approver_ids: Collection[int], quorum: int) -> bool:
    """A stage completes when ``quorum`` distinct people have approved it."""
    return len(set(approver_ids)) >= quorum


def next_stage(applicable: Sequence[T], current: T) -> T | None:
    """The stage after ``current`` among the applicable ones, or None when it was the last."""
    orders = [stage.order for stage in applicable]
    index = orders.index(current.order)
    return applicable[index + 1] if index + 1 < len(applicable) else None


def is_final_stage(applicable: Sequence[T], stage: T) -> bool:
    """Whether completing ``stage`` approves the proposal: it is the last applicable stage."""
    return next_stage(applicable, stage) is None


@dataclass(frozen=True)
class DecisionOutcome(Generic[T]):
    """What one verdict at the current stage does to a proposal in review (rules 4 and 5)."""

    # The transition it makes: "reject", "request_changes", "advance" (the proposal stays in
    # review, at the same or the next stage) or "approve" (the last stage completed).
    action: str
    state: str  # the proposal's state after it
    stage_complete: bool
    next_stage: T | None  # the stage that opens, when a stage completed that was not the last

    @property
    def final_approval(self) -> bool:
        return self.action == "approve"


def decision_outcome(
    *,
    state: str,
    applicable: Sequence[T],
    stage: T,
    approver_ids: Collection[int],
    decider_id: int,
    verdict: str,
) -> DecisionOutcome[T]:
    """The effect of ``decider_id``'s ``verdict`` at ``stage``, given who approved it already on
    this version (``approver_ids``) and the stages of the policy snapshot that apply.

    A reject or a request for changes ends the review at once (rule 5); an approval completes
    the stage at its quorum of distinct people (rule 4) and opens the next applicable stage, or
    approves the proposal when the stage was the last. Raises ``InvalidTransition`` when the
    proposal is not in review.
    """
    if verdict == Decision.Verdict.REJECT:
        return DecisionOutcome("reject", transition("reject", state), False, None)
    if verdict == Decision.Verdict.REQUEST_CHANGES:
        action = "request_changes"
        return DecisionOutcome(action, transition(action, state), False, None)
    complete = quorum_reached({*approver_ids, decider_id}, stage.quorum)
    following = next_stage(applicable, stage) if complete else None
    action = "approve" if complete and following is None else "advance"
    return DecisionOutcome(action, transition(action, state), complete, following)


def validate_stages(stages: Sequence[StageLike]) -> None:
    """Refuse a set of stages that could not govern proposals safely.

    A policy needs at least one stage, distinct orders, deciding-role permissions, quorums of at
    least one, known operation kinds, and for every kind a stage applying from USD 0, so that no
    proposal of any kind is ever approved by nobody.
    """
    problems = []
    if not stages:
        problems.append("A policy needs at least one stage.")
    orders = [stage.order for stage in stages]
    if len(orders) != len(set(orders)):
        problems.append("Stage orders must be distinct.")
    for stage in stages:
        if stage.permission not in DECIDING_ROLES:
            problems.append(
                f"Stage {stage.name!r}: {str(stage.permission)!r} is not a deciding role."
            )
        if stage.quorum < 1:
            problems.append(f"Stage {stage.name!r}: the quorum must be at least 1.")
        if stage.applies_from_usd < 0:
            problems.append(f"Stage {stage.name!r}: the threshold cannot be negative.")
        if not stage.name.strip():
            problems.append("Every stage needs a name.")
        unknown = set(stage.kinds) - set(OperationKind.values)
        if unknown:
            problems.append(
                f"Stage {stage.name!r}: {', '.join(sorted(unknown))} is not a kind of operation."
            )
    if stages:
        unreviewed = [
            kind
            for kind in OperationKind.values
            if not any(s.applies_from_usd == 0 and applies_to(s, kind) for s in stages)
        ]
        if unreviewed:
            problems.append(
                "Every kind of operation needs a stage applying from USD 0, so every proposal "
                f"is reviewed; none does for: {', '.join(unreviewed)}."
            )
    if problems:
        raise PolicyInvalid(" ".join(problems), context={"problems": problems})


@dataclass(frozen=True)
class StageStatus:
    """How far one applicable stage of a proposal has come, for display and the API."""

    order: int
    name: str
    permission: str
    quorum: int
    approvals: tuple[str, ...]
    status: str  # "complete", "current", "pending", "rejected", "changes_requested"


def stage_statuses(
    applicable: Sequence[StageLike],
    *,
    state: str,
    current_order: int | None,
    verdicts_by_stage: dict[int, list[tuple[str, str]]],
) -> list[StageStatus]:
    """Summarise each applicable stage from the current version's (username, verdict) pairs.

    ``verdicts_by_stage`` maps a stage order to the decisions taken there on the current version.
    """
    result = []
    for stage in applicable:
        verdicts = verdicts_by_stage.get(stage.order, [])
        approvals = tuple(user for user, verdict in verdicts if verdict == "approve")
        halted = next((v for _, v in verdicts if v in ("reject", "request_changes")), None)
        if halted == "reject":
            status = "rejected"
        elif halted == "request_changes":
            status = "changes_requested"
        elif (
            state in (S.APPROVED, S.EXECUTED, S.EXPIRED)
            or (current_order is not None and stage.order < current_order)
            or quorum_reached(approvals, stage.quorum)
        ):
            status = "complete"
        elif stage.order == current_order:
            status = "current"
        else:
            status = "pending"
        result.append(
            StageStatus(stage.order, stage.name, stage.permission, stage.quorum, approvals, status)
        )
    return result
