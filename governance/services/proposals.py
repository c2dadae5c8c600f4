"""A proposal's life on the author's side: draft, edit, submit, withdraw; and its expiry."""

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from governance import compliance, events, permissions, policies
from governance.exceptions import NoPolicyInForce
from governance.models import Proposal, ProposalState
from governance.selectors import compliance_prices, policy_in_force
from governance.services._compliance import blocked_error, compliance_judge
from governance.services._locks import lock_fund, lock_proposal
from portfolio.models import Asset, Fund, FundingSource
from portfolio.text import refuse_hidden_characters

EDITABLE_FIELDS = ("asset", "notional_usd", "limit_price_usd", "rationale", "funding_source")


def _validate_terms(proposal_terms: dict, *, fund: Fund) -> None:
    errors = {}
    for name in ("notional_usd", "limit_price_usd"):
        if name not in proposal_terms:
            continue
        if not proposal_terms[name] > 0:
            errors[name] = "Must be greater than zero."
            continue
        try:
            # The column's own DecimalValidator: no more digits than it stores.
            Proposal._meta.get_field(name).run_validators(proposal_terms[name])
        except ValidationError as exc:
            errors[name] = " ".join(exc.messages)
    if "rationale" in proposal_terms:
        try:
            refuse_hidden_characters(rationale=proposal_terms["rationale"])
        except ValidationError as exc:
            errors |= exc.message_dict
    source = proposal_terms.get("funding_source")
    if source is not None and source.fund_id != fund.pk:
        errors["funding_source"] = "This funding source belongs to another fund."
    if errors:
        raise ValidationError(errors)


def proposal_create(
    *,
    author,
    fund: Fund,
    asset: Asset,
    notional_usd: Decimal,
    limit_price_usd: Decimal,
    rationale: str,
    funding_source: FundingSource,
    kind: str = Proposal.Kind.BUY,
) -> Proposal:
    """Create a draft proposal.

    Preconditions: ``author`` holds ``propose`` on the fund; the funding source is the fund's.
    Effects: a ``draft`` proposal, version 1; audit event ``proposal.created``.
    """
    permissions.raise_if_refused(permissions.propose_refusal(author, fund))
    terms = {
        "asset": asset,
        "notional_usd": notional_usd,
        "limit_price_usd": limit_price_usd,
        "rationale": rationale,
        "funding_source": funding_source,
    }
    _validate_terms(terms, fund=fund)
    with transaction.atomic():
        proposal = Proposal.objects.create(fund=fund, kind=kind, author=author, **terms)
        events.proposal_created_event(actor=author, proposal=proposal)
    return proposal


def proposal_update(*, proposal_id: int, actor, **changes) -> Proposal:
    """Edit a draft (or a proposal returned for changes): any of ``EDITABLE_FIELDS``.

    Preconditions: lock held on the proposal; ``permissions.edit_refusal`` allows it (the
    author, still holding ``propose``; state ``draft`` or ``changes_requested``, rule 7).
    Effects: the changed fields; audit event ``proposal.updated`` with old and new values.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "This field cannot be edited." for name in unknown})
    with transaction.atomic():
        proposal = lock_proposal(proposal_id)
        permissions.raise_if_refused(permissions.edit_refusal(actor, proposal))
        _validate_terms(changes, fund=proposal.fund)
        before = events.proposal_terms_json(proposal)
        for name, value in changes.items():
            setattr(proposal, name, value)
        after = events.proposal_terms_json(proposal)
        changed = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
        if not changed:
            return proposal
        proposal.save(update_fields=[*changes, "updated_at"])
        events.proposal_updated_event(actor=actor, proposal=proposal, changes=changed)
    return proposal


def proposal_submit(*, proposal_id: int, actor) -> Proposal:
    """Submit a draft, or resubmit a proposal returned for changes, into review.

    Preconditions: lock held; ``permissions.submit_refusal`` allows it (the author, from
    ``draft`` or ``changes_requested``); the fund has a policy in force; pre-trade compliance
    does not block (rule 8).
    Effects: resubmission starts a new version, so earlier decisions no longer count (rule 5);
    the policy in force is snapshotted (rule 6) and the first applicable stage opens (rule 4);
    the compliance report is stored; audit ``proposal.submitted``; after commit, task
    ``stage_opened_notify`` e-mails the stage's deciders. A compliance block is
    audited as ``proposal.submit_refused`` and raised as ``ComplianceBlocked``.
    """
    prices = compliance_prices(Proposal.objects.select_related("fund", "asset").get(pk=proposal_id))
    refusal = None
    with transaction.atomic():
        proposal = lock_proposal(proposal_id)
        permissions.raise_if_refused(permissions.submit_refusal(actor, proposal))
        # The fund's lock: the policy in force and the cash compliance counts stay as read.
        lock_fund(proposal.fund)
        policy = policy_in_force(proposal.fund)
        if policy is None:
            raise NoPolicyInForce(f"{proposal.fund} has no approval policy in force.")
        stages = policies.applicable_stages(policy.stages.all(), proposal.notional_usd)
        report, stored = compliance_judge(proposal, at="submission", prices=prices)
        if report.outcome == compliance.BLOCK:
            refusal = blocked_error(report, stored)
            events.proposal_submit_refused_event(
                actor=actor, proposal=proposal, refusal=refusal, compliance=stored
            )
        else:
            if proposal.state == ProposalState.CHANGES_REQUESTED:
                proposal.version += 1
            proposal.state = policies.transition("submit", proposal.state)
            proposal.policy = policy
            proposal.current_stage = stages[0]
            proposal.compliance = stored
            proposal.submitted_at = proposal.stage_opened_at = timezone.now()
            proposal.save(
                update_fields=[
                    "state",
                    "version",
                    "policy",
                    "current_stage",
                    "compliance",
                    "submitted_at",
                    "stage_opened_at",
                    "updated_at",
                ]
            )
            events.proposal_submitted_event(
                actor=actor, proposal=proposal, stages=stages, compliance_outcome=report.outcome
            )
            stage_opened_notify_on_commit(proposal)
            return proposal
    raise refusal


def stage_opened_notify_on_commit(proposal: Proposal) -> None:
    """Queue the e-mail to the deciders of the stage that just opened, in the outbox: the row
    commits with the change (a rollback leaves none) and is published after the commit. A broker
    that is down leaves it waiting for the relay, never failing the committed change
    (``governance.outbox``)."""
    from governance import outbox, tasks  # tasks import the services

    outbox.outbox_enqueue(
        tasks.stage_opened_notify, proposal.pk, proposal.version, proposal.current_stage.order
    )


def proposal_withdraw(*, proposal_id: int, actor, reason: str = "") -> Proposal:
    """Withdraw a proposal before anything of it was executed.

    Preconditions: lock held; ``permissions.withdraw_refusal`` allows it (the author; state
    ``draft``, ``changes_requested``, ``in_review`` or ``approved`` with nothing executed).
    Effects: state ``withdrawn``, the current stage closed; audit ``proposal.withdrawn``.
    """
    refuse_hidden_characters(reason=reason)
    with transaction.atomic():
        proposal = lock_proposal(proposal_id)
        permissions.raise_if_refused(permissions.withdraw_refusal(actor, proposal))
        previous = proposal.state
        proposal.state = policies.transition("withdraw", proposal.state)
        proposal.current_stage = None
        proposal.approval_expires_at = None
        proposal.save(update_fields=["state", "current_stage", "approval_expires_at", "updated_at"])
        events.proposal_withdrawn_event(
            actor=actor, proposal=proposal, from_state=previous, reason=reason
        )
    return proposal


def proposals_expire_due(*, now: dt.datetime | None = None) -> list[int]:
    """Expire every approved proposal whose execution window has passed (rule 9); returns
    their ids.

    Each proposal is locked and re-checked, so a fill racing the expiry either lands first or
    is refused. Effects: state ``expired``; audit ``proposal.expired`` (actor: the system).
    """
    now = now or timezone.now()
    due = Proposal.objects.filter(
        state=ProposalState.APPROVED, approval_expires_at__lte=now
    ).values_list("pk", flat=True)
    expired = []
    for proposal_id in due:
        with transaction.atomic():
            proposal = lock_proposal(proposal_id)
            if proposal.state != ProposalState.APPROVED or proposal.approval_expires_at > now:
                continue
            proposal.state = policies.transition("expire", proposal.state)
            proposal.save(update_fields=["state", "updated_at"])
            events.proposal_expired_event(proposal=proposal)
            expired.append(proposal_id)
    return expired
