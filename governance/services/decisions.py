"""Decisions: one person's verdict at the current stage of a proposal in review."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from governance import compliance, events, permissions, policies
from governance.exceptions import AlreadyDecided, GovernanceError
from governance.models import Decision, Proposal, ProposalState
from governance.roles import roles_on_fund
from governance.second_factor import second_factor_confirm
from governance.selectors import compliance_prices
from governance.services._compliance import blocked_error, compliance_judge
from governance.services._locks import lock_fund, lock_person, lock_proposal
from governance.services.proposals import stage_opened_notify_on_commit
from portfolio.text import refuse_hidden_characters


def decision_record(
    *,
    proposal_id: int,
    user,
    verdict: str,
    otp_token: str | None,
    comment: str = "",
    stage_order: int | None = None,
) -> Decision:
    """Record ``user``'s verdict on the current version at the current stage.

    Preconditions: lock held; ``permissions.decide_refusal`` allows it (state ``in_review``;
    ``user`` is not the author, rule 1; holds the current stage's role on the fund, rule 3; has
    not decided on this version, rule 2; a ``stage_order`` they name is the current stage);
    ``otp_token`` is a fresh code from the user's confirmed TOTP device (step-up), consumed
    once the other checks pass. An approval that completes the last stage re-runs pre-trade
    compliance, and a block refuses it (rule 8).
    Effects: the decision with its evidence and the confirming device, then what
    ``policies.decision_outcome`` says: on reject the proposal is ``rejected``; on request
    changes it returns to the author; on approval the stage completes at its quorum and the
    next applicable stage opens, or the proposal is ``approved`` with its expiry (rule 4).
    Audit ``decision.recorded`` plus the state change; a refusal is audited as
    ``decision.refused``. When a next stage opens, task ``stage_opened_notify`` e-mails its
    deciders after commit.
    """
    if verdict not in Decision.Verdict.values:
        raise ValidationError({"verdict": f"Unknown verdict {verdict!r}."})
    refuse_hidden_characters(comment=comment)
    prices = compliance_prices(Proposal.objects.select_related("fund", "asset").get(pk=proposal_id))
    refusal = None
    with transaction.atomic():
        lock_person(user)
        proposal = lock_proposal(proposal_id)
        roles = roles_on_fund(user, proposal.fund)
        try:
            permissions.raise_if_refused(
                permissions.decide_refusal(user, proposal, roles=roles, stage_order=stage_order)
            )
            device = second_factor_confirm(user=user, otp_token=otp_token)
            return _decide(proposal, user, roles, verdict, comment, device, prices)
        except GovernanceError as exc:
            refusal = exc
            events.decision_refused_event(
                actor=user, proposal=proposal, verdict=verdict, refusal=exc
            )
    raise refusal


def _decide(
    proposal: Proposal, user, roles: set[str], verdict: str, comment: str, device: str, prices
) -> Decision:
    """Work out the decision's effect, refuse if compliance blocks, then write it all.

    Only the final approval commits the fund's cash, so only it takes the fund's lock, after
    the proposal's and before the audit chain's; decisions on other proposals of the fund never
    wait for each other."""
    stage = proposal.current_stage
    approvers = Decision.objects.filter(
        proposal=proposal,
        proposal_version=proposal.version,
        stage=stage,
        verdict=Decision.Verdict.APPROVE,
        voided_at__isnull=True,
    ).values_list("user_id", flat=True)
    outcome = policies.decision_outcome(
        state=proposal.state,
        applicable=policies.applicable_stages(
            proposal.policy.stages.all(), proposal.notional_usd, proposal.kind
        ),
        stage=stage,
        approver_ids=set(approvers),
        decider_id=user.pk,
        verdict=verdict,
    )
    if outcome.final_approval:
        lock_fund(proposal.fund)
    report, stored = compliance_judge(
        proposal,
        at="final_approval" if outcome.final_approval else "decision",
        final_approval=outcome.final_approval,
        prices=prices,
    )
    if outcome.final_approval and report.outcome == compliance.BLOCK:
        raise blocked_error(report, stored)

    try:
        with transaction.atomic():
            decision = Decision.objects.create(
                proposal=proposal,
                proposal_version=proposal.version,
                stage=stage,
                user=user,
                proposal_author_id=proposal.author_id,
                verdict=verdict,
                comment=comment,
                confirmed_by_device=device,
                evidence={
                    "policy_version": proposal.policy.version,
                    "stage": {"order": stage.order, "name": stage.name, "quorum": stage.quorum},
                    "roles": sorted(roles),
                    "price": stored["price"],
                    "compliance": {k: stored[k] for k in ("outcome", "checks", "checked_at")},
                },
            )
    except IntegrityError as exc:
        # The unique constraint caught a concurrent second decision by the same person.
        raise AlreadyDecided("You have already decided on this version.") from exc
    events.decision_recorded_event(decision=decision)
    _apply_outcome(proposal, user, outcome, stage, report.outcome, stored)
    return decision


def _apply_outcome(
    proposal: Proposal, user, outcome: policies.DecisionOutcome, stage, checked: str, stored: dict
) -> None:
    """Move the proposal as ``outcome`` says and record the move (an approval short of the
    quorum leaves it where it is)."""
    now = timezone.now()
    proposal.state = outcome.state
    if outcome.action != "advance":
        proposal.current_stage = None
    if outcome.next_stage is not None:
        proposal.current_stage = outcome.next_stage
        proposal.stage_opened_at = now
        events.proposal_stage_completed_event(
            actor=user, proposal=proposal, stage=stage, next_stage=outcome.next_stage
        )
        stage_opened_notify_on_commit(proposal)
    elif outcome.action == "reject":
        proposal.decided_at = now
        events.proposal_rejected_event(actor=user, proposal=proposal, stage=stage)
    elif outcome.action == "request_changes":
        events.proposal_changes_requested_event(actor=user, proposal=proposal, stage=stage)
    elif outcome.final_approval:
        proposal.decided_at = now
        proposal.approval_expires_at = now + dt.timedelta(days=proposal.fund.execution_window_days)
        proposal.compliance = stored
        events.proposal_approved_event(
            actor=user, proposal=proposal, stage=stage, compliance_outcome=checked
        )
    proposal.save(
        update_fields=[
            "state",
            "current_stage",
            "stage_opened_at",
            "decided_at",
            "approval_expires_at",
            "compliance",
            "updated_at",
        ]
    )


def approvals_void(*, actor, user, reason: str, fund=None, role: str | None = None) -> list[int]:
    """Stop counting ``user``'s approvals on proposals still in review (the current version).

    ``fund`` and ``role`` narrow it to the approvals given at that role's stages on that fund (a
    revoked role); without them, every approval counts no more (a deactivated account). Called
    inside the caller's transaction, after it locked ``user`` and before it locks the fund (lock
    order).
    Effects, per proposal, under its lock: each approval is voided (audit ``decision.voided``
    with ``reason``). When one was given at a stage before the current one, that stage reopens
    (audit ``proposal.stage_reopened``): the approvals given after it are voided as well
    (reason ``stage_reopened``), since the review resumes from there, and the reopened stage's
    deciders are e-mailed. Returns the voided decisions' ids.
    """
    mine = Decision.objects.filter(
        user=user,
        verdict=Decision.Verdict.APPROVE,
        voided_at__isnull=True,
        proposal__state=ProposalState.IN_REVIEW,
        proposal_version=F("proposal__version"),
    )
    if fund is not None:
        mine = mine.filter(proposal__fund=fund)
    if role is not None:
        mine = mine.filter(stage__permission=role)
    voided = []
    now = timezone.now()
    for proposal_id in sorted(set(mine.values_list("proposal_id", flat=True))):
        proposal = lock_proposal(proposal_id)
        theirs = list(mine.filter(proposal=proposal).select_related("stage", "user"))
        if proposal.state != ProposalState.IN_REVIEW or not theirs:
            continue
        reopened = min((d.stage for d in theirs), key=lambda stage: stage.order)
        later = []
        if reopened.order < proposal.current_stage.order:
            later = list(
                Decision.objects.filter(
                    proposal=proposal,
                    proposal_version=proposal.version,
                    voided_at__isnull=True,
                    stage__order__gt=reopened.order,
                )
                .exclude(pk__in=[d.pk for d in theirs])
                .select_related("stage", "user")
            )
        for decision, why in [(d, reason) for d in theirs] + [(d, "stage_reopened") for d in later]:
            decision.voided_at = now
            decision.save(update_fields=["voided_at"])
            events.decision_voided_event(
                actor=actor, proposal=proposal, decision=decision, reason=why
            )
            voided.append(decision.pk)
        if reopened.order < proposal.current_stage.order:
            proposal.current_stage = reopened
            proposal.stage_opened_at = timezone.now()
            proposal.save(update_fields=["current_stage", "stage_opened_at", "updated_at"])
            events.proposal_stage_reopened_event(actor=actor, proposal=proposal, stage=reopened)
            stage_opened_notify_on_commit(proposal)
    return voided
