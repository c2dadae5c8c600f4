"""Pure workflow rules: transitions, applicable stages, quorums, stage order, validation."""

from decimal import Decimal

import pytest

from governance.exceptions import InvalidTransition, PolicyInvalid
from governance.models import ProposalState
from governance.policies import (
    TRANSITIONS,
    StageSpec,
    applicable_stages,
    decision_outcome,
    is_final_stage,
    next_stage,
    quorum_reached,
    stage_statuses,
    transition,
    validate_stages,
)
from portfolio.models import FundRole

S = ProposalState
R = FundRole

RISK = StageSpec(1, "Risk review", R.REVIEW_RISK, 1)
COMMITTEE = StageSpec(2, "Investment committee", R.VOTE_COMMITTEE, 2)
MINISTRY = StageSpec(3, "Ministry sign-off", R.APPROVE_MINISTRY, 1, Decimal("1000000.00"))
ALEM = [RISK, COMMITTEE, MINISTRY]

# The transition table as DESIGN describes it, written out independently of the code:
# action -> {state it may start from: state it leads to}.
EXPECTED = {
    "edit": {S.DRAFT: S.DRAFT, S.CHANGES_REQUESTED: S.CHANGES_REQUESTED},
    "submit": {S.DRAFT: S.IN_REVIEW, S.CHANGES_REQUESTED: S.IN_REVIEW},
    "withdraw": {
        S.DRAFT: S.WITHDRAWN,
        S.CHANGES_REQUESTED: S.WITHDRAWN,
        S.IN_REVIEW: S.WITHDRAWN,
        S.APPROVED: S.WITHDRAWN,
    },
    "advance": {S.IN_REVIEW: S.IN_REVIEW},
    "approve": {S.IN_REVIEW: S.APPROVED},
    "reject": {S.IN_REVIEW: S.REJECTED},
    "request_changes": {S.IN_REVIEW: S.CHANGES_REQUESTED},
    "execute": {S.APPROVED: S.EXECUTED},
    "expire": {S.APPROVED: S.EXPIRED},
}

ALL_PAIRS = [(action, state) for action in EXPECTED for state in S.values]


# ---------------------------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------------------------


def test_transition_table_has_exactly_the_designed_actions():
    assert set(TRANSITIONS) == set(EXPECTED)


@pytest.mark.parametrize(("action", "state"), ALL_PAIRS)
def test_transition_allows_exactly_the_designed_moves(action, state):
    expected = EXPECTED[action].get(state)

    if expected is None:
        with pytest.raises(InvalidTransition) as refused:
            transition(action, state)
        assert refused.value.code == "invalid_state"
        assert refused.value.context == {"action": action, "state": state}
        assert state in refused.value.detail
    else:
        assert transition(action, state) == expected


@pytest.mark.parametrize("state", [S.REJECTED, S.WITHDRAWN, S.EXPIRED, S.EXECUTED])
def test_final_states_have_no_way_out(state):
    for action in TRANSITIONS:
        with pytest.raises(InvalidTransition):
            transition(action, state)


@pytest.mark.parametrize("state", [S.IN_REVIEW, S.APPROVED, S.REJECTED])
def test_a_proposal_cannot_be_edited_outside_draft_and_changes_requested(state):
    with pytest.raises(InvalidTransition) as refused:
        transition("edit", state)

    assert refused.value.detail == (
        f"Cannot edit a proposal that is {state}; only from: changes_requested, draft."
    )


# ---------------------------------------------------------------------------------------------
# Applicable stages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional", "orders"),
    [
        ("0.01", [1, 2]),
        ("500000.00", [1, 2]),
        ("999999.99", [1, 2]),
        ("1000000.00", [1, 2, 3]),  # the threshold is inclusive
        ("1000000.01", [1, 2, 3]),
        ("5000000.00", [1, 2, 3]),
    ],
)
def test_applicable_stages_include_ministry_from_exactly_one_million(notional, orders):
    stages = applicable_stages(ALEM, Decimal(notional))

    assert [stage.order for stage in stages] == orders


def test_applicable_stages_are_returned_in_order_whatever_the_input_order():
    stages = applicable_stages([MINISTRY, RISK, COMMITTEE], Decimal("2000000.00"))

    assert stages == [RISK, COMMITTEE, MINISTRY]


def test_applicable_stages_skip_a_middle_stage_with_a_higher_threshold():
    large_only = StageSpec(2, "Board", R.VOTE_COMMITTEE, 1, Decimal("750000.00"))
    final = StageSpec(3, "Ministry", R.APPROVE_MINISTRY, 1)

    stages = applicable_stages([RISK, large_only, final], Decimal("749999.99"))

    assert stages == [RISK, final]


# ---------------------------------------------------------------------------------------------
# Quorum
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approvers", "quorum", "reached"),
    [
        ([], 1, False),
        ([7], 1, True),
        ([7], 2, False),
        ([7, 7], 2, False),  # one person counts once
        ([7, 7, 7], 2, False),
        ([7, 8], 2, True),
        ([7, 8, 8], 3, False),
        ([7, 8, 8, 9], 3, True),
        ([7, 8, 9], 2, True),
    ],
)
def test_quorum_counts_distinct_people(approvers, quorum, reached):
    assert quorum_reached(approvers, quorum) is reached


# ---------------------------------------------------------------------------------------------
# Next stage
# ---------------------------------------------------------------------------------------------


def test_next_stage_follows_the_applicable_order():
    applicable = [RISK, COMMITTEE, MINISTRY]

    assert next_stage(applicable, RISK) == COMMITTEE
    assert next_stage(applicable, COMMITTEE) == MINISTRY
    assert next_stage(applicable, MINISTRY) is None


def test_next_stage_after_committee_is_none_for_a_small_proposal():
    applicable = applicable_stages(ALEM, Decimal("999999.99"))

    assert next_stage(applicable, COMMITTEE) is None


def test_next_stage_handles_gaps_in_stage_orders():
    first = StageSpec(10, "Risk", R.REVIEW_RISK, 1)
    second = StageSpec(20, "Committee", R.VOTE_COMMITTEE, 1)

    assert next_stage([first, second], first) == second
    assert next_stage([first, second], second) is None


# ---------------------------------------------------------------------------------------------
# Policy validation
# ---------------------------------------------------------------------------------------------


def test_the_alem_policy_is_valid():
    assert validate_stages(ALEM) is None


def _problems(stages) -> list[str]:
    with pytest.raises(PolicyInvalid) as refused:
        validate_stages(stages)
    assert refused.value.code == "policy_invalid"
    return refused.value.context["problems"]


def test_a_policy_without_stages_is_refused():
    assert _problems([]) == ["A policy needs at least one stage."]


def test_a_policy_must_have_a_stage_applying_from_zero():
    # Without one, a proposal below every threshold would be approved by nobody.
    stages = [
        StageSpec(1, "Risk review", R.REVIEW_RISK, 1, Decimal("0.01")),
        StageSpec(2, "Ministry", R.APPROVE_MINISTRY, 1, Decimal("1000000.00")),
    ]

    assert _problems(stages) == [
        "Every kind of operation needs a stage applying from USD 0, so every proposal is "
        "reviewed; none does for: buy, sell, transfer, intake."
    ]


def test_every_kind_of_operation_needs_a_stage_from_zero():
    # A stage from zero for purchases only leaves a small sale, transfer or intake unreviewed.
    stages = [
        StageSpec(1, "Risk review", R.REVIEW_RISK, 1, kinds=("buy",)),
        StageSpec(2, "Treasury transfers", R.VOTE_COMMITTEE, 1, kinds=("transfer",)),
    ]

    assert _problems(stages) == [
        "Every kind of operation needs a stage applying from USD 0, so every proposal is "
        "reviewed; none does for: sell, intake."
    ]


def test_a_policy_needs_only_one_stage_from_zero_not_the_first():
    stages = [
        StageSpec(1, "Ministry first", R.APPROVE_MINISTRY, 1, Decimal("1000000.00")),
        StageSpec(2, "Risk review", R.REVIEW_RISK, 1),
    ]

    assert validate_stages(stages) is None


def test_stage_orders_must_be_distinct():
    stages = [RISK, StageSpec(1, "Committee", R.VOTE_COMMITTEE, 2)]

    assert _problems(stages) == ["Stage orders must be distinct."]


@pytest.mark.parametrize("permission", [R.PROPOSE, R.EXECUTE_TRADES, R.AUDIT, R.MANAGE_POLICY])
def test_a_stage_must_be_decided_by_a_deciding_role(permission):
    stages = [StageSpec(1, "Odd stage", permission.value, 1)]

    assert _problems(stages) == [f"Stage 'Odd stage': {permission.value!r} is not a deciding role."]


def test_a_stage_quorum_must_be_at_least_one():
    stages = [StageSpec(1, "Risk review", R.REVIEW_RISK, 0)]

    assert _problems(stages) == ["Stage 'Risk review': the quorum must be at least 1."]


def test_a_stage_threshold_cannot_be_negative():
    stages = [RISK, StageSpec(2, "Committee", R.VOTE_COMMITTEE, 2, Decimal("-0.01"))]

    assert _problems(stages) == [
        "Stage 'Committee': the threshold cannot be negative.",
    ]


def test_every_stage_needs_a_name():
    stages = [RISK, StageSpec(2, "  ", R.VOTE_COMMITTEE, 2)]

    assert _problems(stages) == ["Every stage needs a name."]


def test_all_problems_are_reported_together():
    stages = [StageSpec(1, "A", "propose", 0, Decimal("5")), StageSpec(1, "B", R.REVIEW_RISK, 1)]

    problems = _problems(stages)

    assert problems == [
        "Stage orders must be distinct.",
        "Stage 'A': 'propose' is not a deciding role.",
        "Stage 'A': the quorum must be at least 1.",
    ]


# ---------------------------------------------------------------------------------------------
# Stage statuses
# ---------------------------------------------------------------------------------------------


def _summary(statuses):
    return [(s.order, s.status, s.approvals) for s in statuses]


def test_stage_statuses_while_the_committee_is_deciding():
    statuses = stage_statuses(
        ALEM,
        state=S.IN_REVIEW,
        current_order=2,
        verdicts_by_stage={1: [("risk", "approve")], 2: [("committee1", "approve")]},
    )

    assert _summary(statuses) == [
        (1, "complete", ("risk",)),
        (2, "current", ("committee1",)),
        (3, "pending", ()),
    ]
    assert (statuses[1].name, statuses[1].permission, statuses[1].quorum) == (
        "Investment committee",
        R.VOTE_COMMITTEE,
        2,
    )


def test_stage_statuses_of_a_rejected_proposal_mark_the_rejecting_stage():
    statuses = stage_statuses(
        ALEM,
        state=S.REJECTED,
        current_order=None,
        verdicts_by_stage={
            1: [("risk", "approve")],
            2: [("committee1", "approve"), ("committee2", "reject")],
        },
    )

    assert [s.status for s in statuses][1:] == ["rejected", "pending"]
    assert statuses[1].approvals == ("committee1",)


@pytest.mark.parametrize("state", [S.REJECTED, S.CHANGES_REQUESTED, S.WITHDRAWN])
def test_a_stage_that_reached_its_quorum_stays_complete_after_review_ends(state):
    verdict = {S.REJECTED: "reject", S.CHANGES_REQUESTED: "request_changes"}.get(state)
    committee = [("committee1", verdict)] if verdict else []

    statuses = stage_statuses(
        ALEM,
        state=state,
        current_order=None,
        verdicts_by_stage={1: [("risk", "approve")], 2: committee},
    )

    assert statuses[0].status == "complete"


def test_stage_statuses_of_changes_requested():
    statuses = stage_statuses(
        ALEM[:2],
        state=S.CHANGES_REQUESTED,
        current_order=None,
        verdicts_by_stage={1: [("risk", "request_changes")]},
    )

    assert [s.status for s in statuses] == ["changes_requested", "pending"]


@pytest.mark.parametrize("state", [S.APPROVED, S.EXECUTED, S.EXPIRED])
def test_every_stage_is_complete_once_approved(state):
    statuses = stage_statuses(
        ALEM[:2],
        state=state,
        current_order=None,
        verdicts_by_stage={
            1: [("risk", "approve")],
            2: [("committee1", "approve"), ("committee3", "approve")],
        },
    )

    assert _summary(statuses) == [
        (1, "complete", ("risk",)),
        (2, "complete", ("committee1", "committee3")),
    ]


def test_stage_statuses_of_a_draft_are_all_pending():
    statuses = stage_statuses(ALEM, state=S.DRAFT, current_order=None, verdicts_by_stage={})

    assert [s.status for s in statuses] == ["pending", "pending", "pending"]


# ---------------------------------------------------------------------------------------------
# What one decision does (no database: the policy snapshot and the approvals so far are values)
# ---------------------------------------------------------------------------------------------

SMALL = applicable_stages(ALEM, Decimal("500000.00"))  # risk, committee
LARGE = applicable_stages(ALEM, Decimal("1000000.00"))  # risk, committee, ministry


def outcome(stage, verdict="approve", approvers=(), applicable=SMALL, state=S.IN_REVIEW):
    return decision_outcome(
        state=state,
        applicable=applicable,
        stage=stage,
        approver_ids=set(approvers),
        decider_id=7,
        verdict=verdict,
    )


def test_an_approval_short_of_the_quorum_keeps_the_stage_open():
    result = outcome(COMMITTEE)

    assert (result.action, result.state, result.stage_complete, result.next_stage) == (
        "advance",
        S.IN_REVIEW,
        False,
        None,
    )
    assert not result.final_approval


def test_an_approval_reaching_the_quorum_opens_the_next_applicable_stage():
    result = outcome(RISK, applicable=LARGE)

    assert (result.action, result.state, result.next_stage) == ("advance", S.IN_REVIEW, COMMITTEE)
    assert result.stage_complete and not result.final_approval


def test_completing_the_last_applicable_stage_approves_the_proposal():
    small = outcome(COMMITTEE, approvers={3})
    large = outcome(COMMITTEE, approvers={3}, applicable=LARGE)

    assert (small.action, small.state, small.final_approval) == ("approve", S.APPROVED, True)
    assert (large.action, large.next_stage) == ("advance", MINISTRY)
    assert is_final_stage(SMALL, COMMITTEE) and not is_final_stage(LARGE, COMMITTEE)


def test_the_same_person_approving_twice_does_not_reach_a_quorum_of_two():
    result = outcome(COMMITTEE, approvers={7})

    assert not result.stage_complete


@pytest.mark.parametrize(
    ("verdict", "action", "state"),
    [("reject", "reject", S.REJECTED), ("request_changes", "request_changes", S.CHANGES_REQUESTED)],
)
def test_a_reject_or_a_request_for_changes_ends_the_review_at_any_stage(verdict, action, state):
    result = outcome(RISK, verdict=verdict, approvers={1, 2, 3})

    assert (result.action, result.state, result.next_stage) == (action, state, None)
    assert not result.stage_complete and not result.final_approval


@pytest.mark.parametrize("verdict", ["approve", "reject", "request_changes"])
def test_no_decision_applies_outside_review(verdict):
    with pytest.raises(InvalidTransition):
        outcome(RISK, verdict=verdict, state=S.APPROVED)


def test_stages_apply_by_kind_and_threshold():
    stages = [
        StageSpec(1, "Risk review", R.REVIEW_RISK, 1),
        StageSpec(2, "Compliance for intakes", R.REVIEW_RISK, 1, kinds=("intake",)),
        StageSpec(
            3, "Ministry for large sales", R.APPROVE_MINISTRY, 1, Decimal("1000000"), ("sell",)
        ),
    ]

    def orders(notional, kind):
        return [s.order for s in applicable_stages(stages, Decimal(notional), kind)]

    assert orders("5000000", "buy") == [1]
    assert orders("999999.99", "sell") == [1]
    assert orders("1000000", "sell") == [1, 3]
    assert orders("10", "intake") == [1, 2]
    assert orders("10", "transfer") == [1]
    validate_stages(stages)  # every kind has its stage from USD 0


def test_a_stage_for_an_unknown_kind_is_refused():
    stages = [StageSpec(1, "Risk review", R.REVIEW_RISK, 1, kinds=("swap",))]

    assert "Stage 'Risk review': swap is not a kind of operation." in _problems(stages)
