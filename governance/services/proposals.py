"""A proposal's life on the author's side: draft, edit, submit, withdraw; and its expiry."""

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from governance import compliance, events, operations, permissions, policies
from governance.exceptions import NoPolicyInForce
from governance.models import Proposal, ProposalState
from governance.selectors import compliance_prices, policy_in_force
from governance.services._compliance import blocked_error, compliance_judge
from governance.services._locks import lock_fund, lock_proposal
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource
from portfolio.prices.selectors import consensus_for
from portfolio.text import refuse_hidden_characters

EDITABLE_FIELDS = (
    "asset",
    "notional_usd",
    "limit_price_usd",
    "rationale",
    "funding_source",
    "quantity",
    "account",
    "destination_account",
    "document_reference",
)


def _validate_terms(proposal: Proposal, *, notional_given: Decimal | None) -> None:
    """Refuse terms ``proposal`` cannot carry for its kind, each error beside its field
    (``operations.terms_problems``), and more digits than a column stores. A sale's, transfer's
    or intake's notional is the services' to set: ``notional_given`` is what the author gave."""
    terms = {name: getattr(proposal, name) for name in operations.EMPTY}
    if proposal.moves_units:
        terms["notional_usd"] = notional_given
    errors = operations.terms_problems(proposal.kind, terms, fund_id=proposal.fund_id)
    for name in ("notional_usd", "limit_price_usd", "quantity"):
        if name in errors or terms[name] is None:
            continue
        try:
            # The column's own DecimalValidator: no more digits than it stores.
            Proposal._meta.get_field(name).run_validators(terms[name])
        except ValidationError as exc:
            errors[name] = " ".join(exc.messages)
    for name in ("rationale", "document_reference"):
        try:
            refuse_hidden_characters(**{name: getattr(proposal, name)})
        except ValidationError as exc:
            errors |= exc.message_dict
    if errors:
        raise ValidationError(errors)


def _value(proposal: Proposal, prices: dict | None = None) -> None:
    """Set the notional of a sale, transfer or intake: its quantity at the consensus price now
    (US dollars at par), whether or not that price is flagged (compliance judges the flags).
    A buy's notional is the author's."""
    if not proposal.moves_units:
        return
    if proposal.asset is None:
        proposal.notional_usd = operations.value_at(proposal.quantity, Decimal("1"))
        return
    consensus = (prices or {}).get(proposal.asset_id) or consensus_for(proposal.asset)
    if consensus.price is None:
        raise ValidationError(
            {"asset": f"{proposal.asset.symbol} has no price yet to value the operation at."}
        )
    proposal.notional_usd = operations.value_at(proposal.quantity, consensus.price)


def proposal_create(
    *,
    author,
    fund: Fund,
    rationale: str,
    kind: str = Proposal.Kind.BUY,
    asset: Asset | None = None,
    notional_usd: Decimal | None = None,
    limit_price_usd: Decimal | None = None,
    funding_source: FundingSource | None = None,
    quantity: Decimal | None = None,
    account: CustodyAccount | None = None,
    destination_account: CustodyAccount | None = None,
    document_reference: str = "",
) -> Proposal:
    """Create a draft proposal of ``kind`` (rule 15), with the terms that kind takes
    (``operations.TERMS``): a buy states its notional and limit price; a sale its quantity,
    account and lowest price; a transfer its quantity and two accounts; an intake its quantity,
    funding source, document and, for coins, the account they go to.

    Preconditions: ``author`` holds ``propose`` on the fund; the terms fit the kind and the
    fund (``operations.terms_problems``).
    Effects: a ``draft`` proposal, version 1, a sale, transfer or intake valued at the
    consensus price now; audit event ``proposal.created``.
    """
    permissions.raise_if_refused(permissions.propose_refusal(author, fund))
    proposal = Proposal(
        fund=fund,
        kind=kind,
        author=author,
        asset=asset,
        notional_usd=notional_usd,
        limit_price_usd=limit_price_usd,
        rationale=rationale,
        funding_source=funding_source,
        quantity=quantity,
        account=account,
        destination_account=destination_account,
        document_reference=document_reference.strip(),
    )
    _validate_terms(proposal, notional_given=notional_usd)
    _value(proposal)
    with transaction.atomic():
        proposal.save()
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
    if isinstance(changes.get("document_reference"), str):
        changes["document_reference"] = changes["document_reference"].strip()
    with transaction.atomic():
        proposal = lock_proposal(proposal_id)
        permissions.raise_if_refused(permissions.edit_refusal(actor, proposal))
        before = events.proposal_terms_json(proposal)
        for name, value in changes.items():
            setattr(proposal, name, value)
        _validate_terms(proposal, notional_given=changes.get("notional_usd"))
        _value(proposal)
        after = events.proposal_terms_json(proposal)
        changed = {
            k: {"from": before.get(k), "to": after.get(k)}
            for k in before.keys() | after.keys()
            if before.get(k) != after.get(k)
        }
        if not changed:
            return proposal
        proposal.save(update_fields=[*changes, "notional_usd", "updated_at"])
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
        # A sale, transfer or intake is judged at its value now (rule 4: stages by notional).
        _value(proposal, prices)
        stages = policies.applicable_stages(
            policy.stages.all(), proposal.notional_usd, proposal.kind
        )
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
                    "notional_usd",
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
