"""Who may do what to a proposal now: one predicate per question, for enforcing and for showing.

Each ``*_refusal`` function answers one question ("may this user decide on this proposal now?")
with the domain error that names the broken rule, or ``None`` when the act is allowed. The
services raise what it returns; the pages use the same function to choose which form to offer
and which sentence to show; the API gets the services' errors. So a page never offers what the
service would refuse, and a rule changes in one place.

The predicates read only what they are given: the proposal (its decisions, prefetched or not)
and the roles the user holds on its fund (``roles``; looked up when not given). Lists that must
be filtered in the database (a decider's queue, the e-mail recipients of a stage) use the
``*_q`` filters beside their predicate; ``tests/governance/test_permissions.py`` runs both on
the same data and checks they agree.
"""

import datetime as dt

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from governance import policies
from governance.exceptions import (
    AlreadyDecided,
    ExecutionRefused,
    FourEyesRequired,
    GovernanceError,
    InvalidTransition,
    NotPermitted,
    SegregationOfDuties,
    StageNotCurrent,
)
from governance.models import AdminChange, CustodyAccountChange, Decision, Proposal, ProposalState
from governance.roles import roles_on_fund, users_with_role
from portfolio.models import Fund, FundRole

User = get_user_model()


def raise_if_refused(refusal: GovernanceError | None) -> None:
    """How the services enforce a predicate: raise the refusal it returned, if any."""
    if refusal is not None:
        raise refusal


def _roles(user, fund: Fund, roles: set[str] | None) -> set[str]:
    return roles_on_fund(user, fund) if roles is None else roles


def _transition_refusal(action: str, state: str) -> InvalidTransition | None:
    try:
        policies.transition(action, state)
    except InvalidTransition as refusal:
        return refusal
    return None


# ---------------------------------------------------------------------------------------------
# Authors: create, edit, submit, withdraw
# ---------------------------------------------------------------------------------------------


def propose_refusal(user, fund: Fund, *, roles: set[str] | None = None) -> NotPermitted | None:
    """May ``user`` draft a proposal on ``fund``: they hold ``propose`` there."""
    if FundRole.PROPOSE not in _roles(user, fund, roles):
        return NotPermitted("Creating a proposal needs the propose role on the fund.")
    return None


def _author_refusal(user, proposal: Proposal, action: str, roles) -> NotPermitted | None:
    if proposal.author_id != user.pk:
        return NotPermitted(f"Only the author may {action} this proposal.")
    if FundRole.PROPOSE not in _roles(user, proposal.fund, roles):
        return NotPermitted(f"You no longer hold the propose role needed to {action} it.")
    return None


def edit_refusal(user, proposal: Proposal, *, roles: set[str] | None = None):
    """May ``user`` edit ``proposal``'s terms: its author, still holding ``propose``, while it is
    a draft or back for changes (rule 7: nothing changes in review)."""
    return _author_refusal(user, proposal, "edit", roles) or _transition_refusal(
        "edit", proposal.state
    )


def submit_refusal(user, proposal: Proposal, *, roles: set[str] | None = None):
    """May ``user`` submit ``proposal`` into review: its author, still holding ``propose``, from
    draft or changes requested. (Compliance and the policy in force are the service's to judge
    at submission.)"""
    return _author_refusal(user, proposal, "submit", roles) or _transition_refusal(
        "submit", proposal.state
    )


def withdraw_refusal(user, proposal: Proposal, *, roles: set[str] | None = None):
    """May ``user`` withdraw ``proposal``: its author, still holding ``propose``, before it is
    decided or executed; an approved proposal only while nothing of it was executed."""
    refusal = _author_refusal(user, proposal, "withdraw", roles) or _transition_refusal(
        "withdraw", proposal.state
    )
    if refusal is None and proposal.has_fills:
        refusal = InvalidTransition("A proposal that is partly executed cannot be withdrawn.")
    return refusal


# ---------------------------------------------------------------------------------------------
# Deciders
# ---------------------------------------------------------------------------------------------


def decide_refusal(
    user, proposal: Proposal, *, roles: set[str] | None = None, stage_order: int | None = None
) -> GovernanceError | None:
    """May ``user`` decide on ``proposal`` now (rules 1, 2, 3 and 7).

    The proposal is in review; ``user`` is not its author; a ``stage_order`` they name is the
    current stage; they hold the current stage's role on the fund and have not decided on the
    current version (at any stage: one person counts once). Reads ``proposal.decisions``
    (prefetched by the pages' selectors).
    """
    refusal = _transition_refusal("advance", proposal.state)
    if refusal is not None:
        return refusal
    if proposal.author_id == user.pk:
        return SegregationOfDuties("The author of a proposal cannot decide on it.")
    stage = proposal.current_stage
    if stage_order is not None and stage_order != stage.order:
        return StageNotCurrent(
            f"Stage {stage_order} is not the current stage; the proposal is at stage "
            f"{stage.order} ({stage.name}).",
            context={"current_stage": stage.order},
        )
    decided = any(
        d.user_id == user.pk and d.proposal_version == proposal.version and d.counts
        for d in proposal.decisions.all()
    )
    if stage.permission not in _roles(user, proposal.fund, roles):
        # Someone who decided at an earlier stage is told that first: it is why they are done.
        return NotPermitted(
            f"Deciding at stage {stage.name!r} needs the {stage.permission} role on the fund.",
            reason=AlreadyDecided.code if decided else "",
        )
    if decided:
        return AlreadyDecided(
            f"You have already decided on version {proposal.version} of this proposal."
        )
    return None


def _decided_on_current_version(user_ref) -> Exists:
    return Exists(
        Decision.objects.filter(
            proposal=OuterRef("pk"),
            proposal_version=OuterRef("version"),
            user=user_ref,
            voided_at__isnull=True,
        )
    )


def awaiting_decision_q(user, roles_by_fund: dict[int, set[str]]) -> Q:
    """``decide_refusal`` as a filter on proposals: those ``user`` may decide on now, given the
    roles they hold per fund (``{fund id: role codenames}``)."""
    at_my_stage = Q(pk__in=[])
    for fund_id, held in roles_by_fund.items():
        at_my_stage |= Q(fund_id=fund_id, current_stage__permission__in=sorted(held))
    return (
        at_my_stage
        & Q(state=ProposalState.IN_REVIEW)
        & ~Q(author=user)
        & ~_decided_on_current_version(user)
    )


def stage_deciders(proposal: Proposal) -> QuerySet:
    """``decide_refusal`` as a filter on people: everyone who may decide at ``proposal``'s
    current stage now (active holders of its role, neither the author nor anyone who decided
    on this version)."""
    if proposal.state != ProposalState.IN_REVIEW or proposal.current_stage is None:
        return User.objects.none()
    decided = Decision.objects.filter(
        proposal=proposal, proposal_version=proposal.version, voided_at__isnull=True
    )
    return (
        users_with_role(proposal.fund, proposal.current_stage.permission)
        .exclude(pk=proposal.author_id)
        .exclude(pk__in=decided.values("user_id"))
    )


# ---------------------------------------------------------------------------------------------
# Treasury
# ---------------------------------------------------------------------------------------------


def executor_refusal(
    user, proposal: Proposal, *, roles: set[str] | None = None
) -> GovernanceError | None:
    """May ``user`` execute ``proposal`` at all (rules 1 and 10): they hold ``execute_trades``
    and are neither its author nor one of its approvers. Reads ``proposal.decisions``."""
    if FundRole.EXECUTE_TRADES not in _roles(user, proposal.fund, roles):
        return NotPermitted("Recording an execution needs the execute_trades role on the fund.")
    if proposal.author_id == user.pk:
        return SegregationOfDuties("The author of a proposal cannot execute it.")
    if any(
        d.user_id == user.pk and d.verdict == Decision.Verdict.APPROVE
        for d in proposal.decisions.all()
    ):
        return SegregationOfDuties(
            "Someone who approved a proposal cannot execute it.", reason="approved_by_you"
        )
    return None


def fill_window_refusal(proposal: Proposal, *, now: dt.datetime | None = None):
    """Does ``proposal`` accept fills now: it is approved and within its execution window
    (rule 9)."""
    refusal = _transition_refusal("execute", proposal.state)
    if refusal is None and proposal.approval_expires_at <= (now or timezone.now()):
        refusal = ExecutionRefused(
            "The approval has expired; the proposal accepts no fill.", code="approval_expired"
        )
    return refusal


def fill_refusal(
    user, proposal: Proposal, *, roles: set[str] | None = None, now: dt.datetime | None = None
) -> GovernanceError | None:
    """May ``user`` record a fill of (or close) ``proposal`` now: ``executor_refusal``, then
    ``fill_window_refusal``. The fill's own terms (price, time, notional) are judged by the
    execution service."""
    return executor_refusal(user, proposal, roles=roles) or fill_window_refusal(proposal, now=now)


def awaiting_fill_q(user, fund_ids, *, now: dt.datetime) -> Q:
    """``fill_refusal`` as a filter on proposals: those ``user`` may record fills of now, on the
    funds (``fund_ids``) where they hold ``execute_trades``."""
    approved_by_user = Decision.objects.filter(
        proposal=OuterRef("pk"), user=user, verdict=Decision.Verdict.APPROVE
    )
    return (
        Q(fund_id__in=list(fund_ids), state=ProposalState.APPROVED, approval_expires_at__gt=now)
        & ~Q(author=user)
        & ~Exists(approved_by_user)
    )


# ---------------------------------------------------------------------------------------------
# Site administrators: four eyes on who may act (DESIGN rule 14)
# ---------------------------------------------------------------------------------------------


def site_admin_refusal(user) -> NotPermitted | None:
    """May ``user`` run the back office's people tools at all: an active site administrator."""
    if not (user.is_active and user.is_superuser):
        return NotPermitted("Only a site administrator may change who may act.")
    return None


def admin_change_confirm_refusal(user, change: AdminChange) -> GovernanceError | None:
    """May ``user`` confirm ``change`` now: another active site administrator than the one who
    asked for it and than the person it is for, while it waits for confirmation."""
    if refusal := site_admin_refusal(user):
        return refusal
    if change.state != AdminChange.State.PENDING:
        return InvalidTransition(f"This change is {change.get_state_display().lower()}.")
    if change.requested_by_id == user.pk:
        return FourEyesRequired(
            "You asked for this change; another site administrator must confirm it."
        )
    if change.user_id == user.pk:
        return FourEyesRequired(
            "This change is for you; a site administrator other than you must confirm it."
        )
    return None


def admin_change_cancel_refusal(user, change: AdminChange) -> GovernanceError | None:
    """May ``user`` cancel ``change``: any active site administrator, until it takes effect."""
    if refusal := site_admin_refusal(user):
        return refusal
    if change.state not in AdminChange.OPEN_STATES:
        return InvalidTransition(f"This change is {change.get_state_display().lower()}.")
    return None


# ---------------------------------------------------------------------------------------------
# Custody accounts: fund administrators, four eyes to add or change one (rule 14)
# ---------------------------------------------------------------------------------------------


def fund_admin_refusal(user, fund: Fund, *, roles: set[str] | None = None) -> NotPermitted | None:
    """May ``user`` administer ``fund``'s custody accounts: they hold ``manage_policy`` there."""
    if FundRole.MANAGE_POLICY not in _roles(user, fund, roles):
        return NotPermitted("Custody accounts are managed by holders of manage_policy on the fund.")
    return None


def custody_change_confirm_refusal(
    user, change: CustodyAccountChange, *, roles: set[str] | None = None
) -> GovernanceError | None:
    """May ``user`` confirm ``change`` now: a fund administrator other than the one who asked
    for it, while it waits for confirmation."""
    if refusal := fund_admin_refusal(user, change.fund, roles=roles):
        return refusal
    if change.state != CustodyAccountChange.State.PENDING:
        return InvalidTransition(f"This change is {change.get_state_display().lower()}.")
    if change.requested_by_id == user.pk:
        return FourEyesRequired(
            "You asked for this change; another fund administrator must confirm it."
        )
    return None


def custody_change_cancel_refusal(
    user, change: CustodyAccountChange, *, roles: set[str] | None = None
) -> GovernanceError | None:
    """May ``user`` cancel ``change``: any fund administrator, the requester included, while it
    waits for confirmation."""
    if refusal := fund_admin_refusal(user, change.fund, roles=roles):
        return refusal
    if change.state != CustodyAccountChange.State.PENDING:
        return InvalidTransition(f"This change is {change.get_state_display().lower()}.")
    return None
