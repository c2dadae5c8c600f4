"""Every write of the governance app: one function per use case, one transaction each.

Each service locks what it changes, checks the current state against the transition table in
``governance.policies``, writes its audit event in the same transaction and saves with
``update_fields``. Refusals of consequence are written to the audit log before the error is
raised, so the record of the attempt survives the refusal.
"""

import datetime as dt
from decimal import Decimal, localcontext

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from governance import compliance, policies
from governance.audit import audit_record
from governance.exceptions import (
    AlreadyDecided,
    ComplianceBlocked,
    DuplicateExternalRef,
    ExecutionRefused,
    FourEyesRequired,
    GovernanceError,
    InvalidTransition,
    NoPolicyInForce,
    NotPermitted,
    SegregationOfDuties,
    StageNotCurrent,
)
from governance.models import (
    ApprovalPolicy,
    Decision,
    Execution,
    PolicyStage,
    Proposal,
    ProposalState,
)
from governance.roles import direct_grants, has_role, roles_on_fund
from governance.second_factor import second_factor_confirm
from governance.selectors import compliance_facts, policy_in_force
from portfolio import services as books
from portfolio.models import Asset, Fund, FundingSource, FundRole, LedgerEntry, Price
from portfolio.prices.fetching import price_record_manual

# Digits for money arithmetic: wide enough that the sum or product of two amount columns
# (quantity x price + fee, executed notional + cost) is exact, never rounded to 28 digits.
EXACT_DIGITS = 2 * settings.ALEM_DECIMALS["amount"][0]

EDITABLE_FIELDS = ("asset", "notional_usd", "limit_price_usd", "rationale", "funding_source")


# ---------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------


def _require_site_administrator(actor) -> None:
    """Role grants are the site administrator's; ``actor=None`` is the command line."""
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise NotPermitted("Only a site administrator may grant or revoke fund roles.")


def role_grant(*, actor, user, fund: Fund, role: str) -> bool:
    """Give ``user`` the fund role ``role``; returns False if they already held it.

    Effects: a guardian object permission on ``fund``; audit event ``role.granted``.
    """
    _require_site_administrator(actor)
    if role not in FundRole.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    with transaction.atomic():
        _lock_fund(fund)
        if (user.pk, role) in direct_grants(fund, user=user):
            return False
        assign_perm(f"portfolio.{role}", user, fund)
        audit_record(
            action="role.granted",
            actor=actor,
            fund=fund,
            payload={"user": user.username, "user_id": user.pk, "role": role},
        )
    return True


def role_revoke(*, actor, user, fund: Fund, role: str) -> bool:
    """Take the fund role ``role`` from ``user``; returns False if they did not hold it.

    Effects: removes the object permission; audit event ``role.revoked``.
    """
    _require_site_administrator(actor)
    if role not in FundRole.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    with transaction.atomic():
        _lock_fund(fund)
        if (user.pk, role) not in direct_grants(fund, user=user):
            if has_role(user, fund, role):
                raise InvalidTransition(
                    f"{user.username} holds {role} through a group; remove them from the group."
                )
            return False
        remove_perm(f"portfolio.{role}", user, fund)
        audit_record(
            action="role.revoked",
            actor=actor,
            fund=fund,
            payload={"user": user.username, "user_id": user.pk, "role": role},
        )
    return True


# ---------------------------------------------------------------------------------------------
# Approval policies
# ---------------------------------------------------------------------------------------------


def policy_draft(
    *, actor, fund: Fund, stages: list[policies.StageSpec], note: str = ""
) -> ApprovalPolicy:
    """Draft the next version of ``fund``'s approval policy (not in force until published).

    Preconditions: ``actor`` holds ``manage_policy`` on the fund; the stages validate.
    Effects: the policy and its stages; audit event ``policy.drafted``.
    """
    if not has_role(actor, fund, FundRole.MANAGE_POLICY):
        raise NotPermitted("Drafting a policy needs the manage_policy role on the fund.")
    policies.validate_stages(stages)
    with transaction.atomic():
        _lock_fund(fund)  # serialises version numbering
        last = ApprovalPolicy.objects.filter(fund=fund).order_by("-version").first()
        policy = ApprovalPolicy.objects.create(
            fund=fund, version=(last.version + 1) if last else 1, note=note, drafted_by=actor
        )
        PolicyStage.objects.bulk_create(
            PolicyStage(
                policy=policy,
                order=spec.order,
                name=spec.name,
                permission=spec.permission,
                quorum=spec.quorum,
                applies_from_usd=spec.applies_from_usd,
            )
            for spec in stages
        )
        audit_record(
            action="policy.drafted",
            actor=actor,
            fund=fund,
            payload={"version": policy.version, "note": note, "stages": _stages_json(stages)},
        )
    return policy


def policy_publish(*, actor, policy_id: int) -> ApprovalPolicy:
    """Put a drafted policy version in force; it governs proposals submitted from now on.

    Preconditions: ``actor`` holds ``manage_policy`` on the fund and is not the drafter (four
    eyes); the version is a draft newer than every published one.
    Effects: ``published_by/at`` set, the policy frozen; audit event ``policy.published``.
    """
    with transaction.atomic():
        policy = (
            ApprovalPolicy.objects.select_for_update(of=("self",), no_key=True)
            .select_related("fund")
            .get(pk=policy_id)
        )
        if not has_role(actor, policy.fund, FundRole.MANAGE_POLICY):
            raise NotPermitted("Publishing a policy needs the manage_policy role on the fund.")
        if policy.is_published:
            raise InvalidTransition(f"Policy version {policy.version} is already published.")
        if policy.drafted_by_id == actor.pk:
            raise FourEyesRequired(
                "A policy version must be published by a different administrator than its drafter."
            )
        current = policy_in_force(policy.fund)
        if current is not None and current.version > policy.version:
            raise InvalidTransition(
                f"Version {policy.version} is older than version {current.version} in force."
            )
        policies.validate_stages(list(policy.stages.all()))
        policy.published_by = actor
        policy.published_at = timezone.now()
        policy.save(update_fields=["published_by", "published_at"])
        audit_record(
            action="policy.published",
            actor=actor,
            fund=policy.fund,
            payload={
                "version": policy.version,
                "drafted_by": policy.drafted_by_id,
                "stages": _stages_json(policy.stages.all()),
            },
        )
    return policy


def _stages_json(stages) -> list[dict]:
    return [
        {
            "order": s.order,
            "name": s.name,
            "permission": s.permission,
            "quorum": s.quorum,
            "applies_from_usd": str(s.applies_from_usd),
        }
        for s in stages
    ]


# ---------------------------------------------------------------------------------------------
# Manual prices
# ---------------------------------------------------------------------------------------------


def price_enter_manual(
    *, actor, asset: Asset, price: Decimal, observed_at: dt.datetime | None = None
) -> Price:
    """Enter a USD price an administrator read elsewhere (e.g. while a provider is down).

    Preconditions: ``actor`` is a site administrator. The price counts as one more source in the
    consensus, so on its own it never makes a price usable (it is ``single_source``).
    Effects: a ``Price`` with source ``manual`` signed by ``actor``; audit
    ``price.entered_manually``. An invalid price raises ``ManualPriceInvalid``, storing nothing.
    """
    if not (actor.is_active and actor.is_superuser):
        raise NotPermitted("Only a site administrator may enter a manual price.")
    with transaction.atomic():
        row = price_record_manual(
            asset=asset, price=price, entered_by=actor, observed_at=observed_at
        )
        audit_record(
            action="price.entered_manually",
            actor=actor,
            payload={
                "price": row.pk,
                "asset": asset.symbol,
                "price_usd": str(row.price),
                "observed_at": row.observed_at.isoformat(),
            },
        )
    return row


# ---------------------------------------------------------------------------------------------
# Contributions
# ---------------------------------------------------------------------------------------------


def contribution_record(
    *,
    actor,
    fund: Fund,
    funding_source: FundingSource,
    amount_usd: Decimal,
    asset: Asset | None = None,
    quantity: Decimal | None = None,
    memo: str = "",
    booked_at: dt.datetime | None = None,
) -> LedgerEntry:
    """Book a contribution of cash (``asset=None``) or of an asset in kind.

    ``amount_usd`` is the cash amount, or the value of the asset at contribution (its cost basis).
    Preconditions: ``actor`` holds ``manage_policy`` on the fund (``None`` is the system, used by
    the demo seed); the funding source belongs to the fund.
    Effects: one ledger entry; audit event ``contribution.recorded``.
    """
    if actor is not None and not has_role(actor, fund, FundRole.MANAGE_POLICY):
        raise NotPermitted("Recording a contribution needs the manage_policy role on the fund.")
    if funding_source.fund_id != fund.pk:
        raise ValidationError({"funding_source": "This funding source belongs to another fund."})
    if asset is None:
        quantity = amount_usd
    if quantity is None or quantity <= 0 or amount_usd < 0 or (asset is None and amount_usd <= 0):
        raise ValidationError({"quantity": "A contribution must be positive."})
    with transaction.atomic():
        entry = books.ledger_entry_book(
            fund=fund,
            kind=LedgerEntry.Kind.CONTRIBUTION,
            asset=asset,
            quantity=quantity,
            value_usd=amount_usd,
            funding_source=funding_source,
            memo=memo,
            booked_at=booked_at,
            booked_by=actor,
        )
        audit_record(
            action="contribution.recorded",
            actor=actor,
            fund=fund,
            payload={
                "ledger_entry": entry.pk,
                "asset": asset.symbol if asset else "USD",
                "quantity": str(quantity),
                "value_usd": str(amount_usd),
                "funding_source": funding_source.name,
                "memo": memo,
            },
        )
    return entry


# ---------------------------------------------------------------------------------------------
# Proposals
# ---------------------------------------------------------------------------------------------


def _lock_fund(fund: Fund) -> None:
    """Serialise writers of one fund's policies and roles.

    ``FOR NO KEY UPDATE``, never a full ``FOR UPDATE``: audit events reference the fund, and
    their inserts take a key-share lock on it while holding the audit chain lock, so a full lock
    here would deadlock against them.
    """
    Fund.objects.select_for_update(no_key=True).only("pk").get(pk=fund.pk)


def _lock_proposal(proposal_id: int) -> Proposal:
    """Lock the proposal row (rule 12), then read it with its relations.

    Two statements on purpose: after waiting for a lock PostgreSQL re-reads only the locked row,
    so rows joined in the locking statement could be stale (a current stage that just moved
    would come back empty). ``NO KEY`` for the same reason as ``_lock_fund``.
    """
    Proposal.objects.select_for_update(no_key=True).only("pk").get(pk=proposal_id)
    return Proposal.objects.select_related(
        "fund", "asset", "funding_source", "policy", "current_stage"
    ).get(pk=proposal_id)


def _require_author(proposal: Proposal, actor, action: str) -> None:
    if proposal.author_id != actor.pk:
        raise NotPermitted(f"Only the author may {action} this proposal.")
    if not has_role(actor, proposal.fund, FundRole.PROPOSE):
        raise NotPermitted(f"You no longer hold the propose role needed to {action} it.")


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
    source = proposal_terms.get("funding_source")
    if source is not None and source.fund_id != fund.pk:
        errors["funding_source"] = "This funding source belongs to another fund."
    if errors:
        raise ValidationError(errors)


def _terms_json(proposal: Proposal) -> dict:
    return {
        "asset": proposal.asset.symbol,
        "side": proposal.side,
        "notional_usd": str(proposal.notional_usd),
        "limit_price_usd": str(proposal.limit_price_usd),
        "funding_source": proposal.funding_source.name,
        "rationale": proposal.rationale,
    }


def proposal_create(
    *,
    author,
    fund: Fund,
    asset: Asset,
    notional_usd: Decimal,
    limit_price_usd: Decimal,
    rationale: str,
    funding_source: FundingSource,
    side: str = Proposal.Side.BUY,
) -> Proposal:
    """Create a draft proposal.

    Preconditions: ``author`` holds ``propose`` on the fund; the funding source is the fund's.
    Effects: a ``draft`` proposal, version 1; audit event ``proposal.created``.
    """
    if not has_role(author, fund, FundRole.PROPOSE):
        raise NotPermitted("Creating a proposal needs the propose role on the fund.")
    _validate_terms(
        {
            "notional_usd": notional_usd,
            "limit_price_usd": limit_price_usd,
            "funding_source": funding_source,
        },
        fund=fund,
    )
    with transaction.atomic():
        proposal = Proposal.objects.create(
            fund=fund,
            asset=asset,
            side=side,
            notional_usd=notional_usd,
            limit_price_usd=limit_price_usd,
            rationale=rationale,
            funding_source=funding_source,
            author=author,
        )
        audit_record(
            action="proposal.created",
            actor=author,
            proposal=proposal,
            payload={"version": proposal.version, **_terms_json(proposal)},
        )
    return proposal


def proposal_update(*, proposal_id: int, actor, **changes) -> Proposal:
    """Edit a draft (or a proposal returned for changes): any of ``EDITABLE_FIELDS``.

    Preconditions: lock held on the proposal; state ``draft`` or ``changes_requested`` (rule 7:
    nothing changes in review); ``actor`` is the author and still holds ``propose``.
    Effects: the changed fields; audit event ``proposal.updated`` with old and new values.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "This field cannot be edited." for name in unknown})
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        _require_author(proposal, actor, "edit")
        policies.transition("edit", proposal.state)
        _validate_terms(changes, fund=proposal.fund)
        before = _terms_json(proposal)
        for name, value in changes.items():
            setattr(proposal, name, value)
        after = _terms_json(proposal)
        changed = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
        if not changed:
            return proposal
        proposal.save(update_fields=[*changes, "updated_at"])
        audit_record(
            action="proposal.updated",
            actor=actor,
            proposal=proposal,
            payload={"version": proposal.version, "changes": changed},
        )
    return proposal


def _compliance_report(
    proposal: Proposal, *, at: str, final_approval: bool = False
) -> tuple[compliance.ComplianceReport, dict]:
    # Rule 12: compliance checks of one fund run one at a time until their transaction ends, so
    # two approvals cannot both count the same cash (the proposal is locked already).
    _lock_fund(proposal.fund)
    facts, price_seen = compliance_facts(proposal, final_approval=final_approval)
    report = compliance.evaluate(facts)
    stored = {
        **report.as_json(),
        "checked_at": timezone.now().isoformat(),
        "checked_for": at,
        "price": price_seen,
    }
    return report, stored


def _blocked_error(report: compliance.ComplianceReport, stored: dict) -> ComplianceBlocked:
    reasons = " ".join(check.message for check in report.blocking)
    return ComplianceBlocked(f"Pre-trade compliance blocks this: {reasons}", context=stored)


def proposal_submit(*, proposal_id: int, actor) -> Proposal:
    """Submit a draft, or resubmit a proposal returned for changes, into review.

    Preconditions: lock held; state ``draft`` or ``changes_requested``; ``actor`` is the author;
    the fund has a policy in force; pre-trade compliance does not block (rule 8).
    Effects: resubmission starts a new version, so earlier decisions no longer count (rule 5);
    the policy in force is snapshotted (rule 6) and the first applicable stage opens (rule 4);
    the compliance report is stored; audit ``proposal.submitted``; after commit, task
    ``stage_opened_notify`` e-mails the stage's deciders. A compliance block is
    audited as ``proposal.submit_refused`` and raised as ``ComplianceBlocked``.
    """
    refusal = None
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        _require_author(proposal, actor, "submit")
        target = policies.transition("submit", proposal.state)
        policy = policy_in_force(proposal.fund)
        if policy is None:
            raise NoPolicyInForce(f"{proposal.fund} has no approval policy in force.")
        stages = policies.applicable_stages(policy.stages.all(), proposal.notional_usd)
        report, stored = _compliance_report(proposal, at="submission")
        if report.outcome == compliance.BLOCK:
            refusal = _blocked_error(report, stored)
            audit_record(
                action="proposal.submit_refused",
                actor=actor,
                proposal=proposal,
                payload={"code": refusal.code, "detail": refusal.detail, "compliance": stored},
            )
        else:
            if proposal.state == ProposalState.CHANGES_REQUESTED:
                proposal.version += 1
            proposal.state = target
            proposal.policy = policy
            proposal.current_stage = stages[0]
            proposal.compliance = stored
            proposal.submitted_at = timezone.now()
            proposal.save(
                update_fields=[
                    "state",
                    "version",
                    "policy",
                    "current_stage",
                    "compliance",
                    "submitted_at",
                    "updated_at",
                ]
            )
            audit_record(
                action="proposal.submitted",
                actor=actor,
                proposal=proposal,
                payload={
                    "version": proposal.version,
                    "policy_version": policy.version,
                    "stages": _stages_json(stages),
                    "compliance": report.outcome,
                    "terms": _terms_json(proposal),
                },
            )
            _notify_stage_opened(proposal)
            return proposal
    raise refusal


def _notify_stage_opened(proposal: Proposal) -> None:
    """Once the transaction commits, queue the e-mail to the deciders of the stage that just
    opened; nothing is queued if it rolls back. A broker that is down is logged, never turned
    into a failure of the committed change (``robust``)."""
    from governance import tasks  # tasks import this module

    args = (proposal.pk, proposal.version, proposal.current_stage.order)

    # A named function, not a partial: Django logs a robust hook's failure by its __qualname__.
    def queue_stage_opened_notify():
        tasks.stage_opened_notify.delay(*args)

    transaction.on_commit(queue_stage_opened_notify, robust=True)


def proposal_withdraw(*, proposal_id: int, actor, reason: str = "") -> Proposal:
    """Withdraw a proposal before anything of it was executed.

    Preconditions: lock held; state ``draft``, ``changes_requested``, ``in_review`` or
    ``approved`` with nothing executed; ``actor`` is the author.
    Effects: state ``withdrawn``, the current stage closed; audit ``proposal.withdrawn``.
    """
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        _require_author(proposal, actor, "withdraw")
        target = policies.transition("withdraw", proposal.state)
        if proposal.executed_notional_usd > 0:
            raise InvalidTransition("A proposal that is partly executed cannot be withdrawn.")
        previous = proposal.state
        proposal.state = target
        proposal.current_stage = None
        proposal.approval_expires_at = None
        proposal.save(update_fields=["state", "current_stage", "approval_expires_at", "updated_at"])
        audit_record(
            action="proposal.withdrawn",
            actor=actor,
            proposal=proposal,
            payload={"version": proposal.version, "from_state": previous, "reason": reason},
        )
    return proposal


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


def _check_decision_allowed(proposal: Proposal, user, stage_order: int | None) -> PolicyStage:
    """Rules 1, 2, 3 and 7 for one attempted decision; returns the stage it counts at."""
    policies.transition("advance", proposal.state)
    if proposal.author_id == user.pk:
        raise SegregationOfDuties("The author of a proposal cannot decide on it.")
    stage = proposal.current_stage
    if stage_order is not None and stage_order != stage.order:
        raise StageNotCurrent(
            f"Stage {stage_order} is not the current stage; the proposal is at stage "
            f"{stage.order} ({stage.name}).",
            context={"current_stage": stage.order},
        )
    if not has_role(user, proposal.fund, stage.permission):
        raise NotPermitted(
            f"Deciding at stage {stage.name!r} needs the {stage.permission} role on the fund."
        )
    if Decision.objects.filter(
        proposal=proposal, proposal_version=proposal.version, user=user
    ).exists():
        raise AlreadyDecided(
            f"You have already decided on version {proposal.version} of this proposal."
        )
    return stage


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

    Preconditions: lock held; state ``in_review``; ``user`` is not the author (rule 1), holds
    the current stage's role on the fund (rule 3), has not decided on this version (rule 2); if
    ``stage_order`` is given it is the current stage; ``otp_token`` is a fresh code from the
    user's confirmed TOTP device (step-up), consumed once the other checks pass. An approval
    that completes the last stage re-runs pre-trade compliance, and a block refuses it (rule 8).
    Effects: the decision with its evidence and the confirming device; on reject the proposal is
    ``rejected``; on request changes it returns to the author; on approval the stage completes
    at its quorum and the next applicable stage opens, or the proposal is ``approved`` with its
    expiry (rule 4). Audit ``decision.recorded`` plus the state change; a refusal is audited as
    ``decision.refused``. When a next stage opens, task ``stage_opened_notify`` e-mails its
    deciders after commit.
    """
    if verdict not in Decision.Verdict.values:
        raise ValidationError({"verdict": f"Unknown verdict {verdict!r}."})
    refusal = None
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        try:
            stage = _check_decision_allowed(proposal, user, stage_order)
            device = second_factor_confirm(user=user, otp_token=otp_token)
            decision, events = _apply_decision(proposal, stage, user, verdict, comment, device)
        except GovernanceError as exc:
            refusal = exc
            audit_record(
                action="decision.refused",
                actor=user,
                proposal=proposal,
                payload={
                    "version": proposal.version,
                    "verdict": verdict,
                    "code": exc.code,
                    "detail": exc.detail,
                },
            )
        else:
            for action, payload in events:
                audit_record(action=action, actor=user, proposal=proposal, payload=payload)
            return decision
    raise refusal


def _apply_decision(
    proposal: Proposal, stage: PolicyStage, user, verdict: str, comment: str, device: str
) -> tuple[Decision, list[tuple[str, dict]]]:
    """Work out the decision's effect, refuse if compliance blocks, then write it."""
    approvers = set(
        Decision.objects.filter(
            proposal=proposal,
            proposal_version=proposal.version,
            stage=stage,
            verdict=Decision.Verdict.APPROVE,
        ).values_list("user_id", flat=True)
    )
    stage_complete = verdict == Decision.Verdict.APPROVE and policies.quorum_reached(
        approvers | {user.pk}, stage.quorum
    )
    applicable = policies.applicable_stages(proposal.policy.stages.all(), proposal.notional_usd)
    following = policies.next_stage(applicable, stage) if stage_complete else None
    final_approval = stage_complete and following is None
    report, stored = _compliance_report(
        proposal,
        at="final_approval" if final_approval else "decision",
        final_approval=final_approval,
    )
    if final_approval and report.outcome == compliance.BLOCK:
        raise _blocked_error(report, stored)

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
                    "roles": sorted(roles_on_fund(user, proposal.fund)),
                    "price": stored["price"],
                    "compliance": {k: stored[k] for k in ("outcome", "checks", "checked_at")},
                },
            )
    except IntegrityError as exc:
        # The unique constraint caught a concurrent second decision by the same person.
        raise AlreadyDecided("You have already decided on this version.") from exc

    events = [
        (
            "decision.recorded",
            {
                "decision": decision.pk,
                "version": proposal.version,
                "stage": stage.order,
                "verdict": verdict,
                "comment": comment,
                "confirmed_by_device": device,
            },
        )
    ]
    now = timezone.now()
    if verdict == Decision.Verdict.REJECT:
        proposal.state = policies.transition("reject", proposal.state)
        proposal.current_stage = None
        proposal.decided_at = now
        events.append(("proposal.rejected", {"version": proposal.version, "stage": stage.order}))
    elif verdict == Decision.Verdict.REQUEST_CHANGES:
        proposal.state = policies.transition("request_changes", proposal.state)
        proposal.current_stage = None
        events.append(
            ("proposal.changes_requested", {"version": proposal.version, "stage": stage.order})
        )
    elif following is not None:
        proposal.current_stage = following
        events.append(
            (
                "proposal.stage_completed",
                {"version": proposal.version, "stage": stage.order, "next_stage": following.order},
            )
        )
        _notify_stage_opened(proposal)
    elif final_approval:
        proposal.state = policies.transition("approve", proposal.state)
        proposal.current_stage = None
        proposal.decided_at = now
        proposal.approval_expires_at = now + dt.timedelta(days=proposal.fund.execution_window_days)
        proposal.compliance = stored
        events.append(
            (
                "proposal.approved",
                {
                    "version": proposal.version,
                    "stage": stage.order,
                    "approval_expires_at": proposal.approval_expires_at.isoformat(),
                    "compliance": report.outcome,
                },
            )
        )
    proposal.save(
        update_fields=[
            "state",
            "current_stage",
            "decided_at",
            "approval_expires_at",
            "compliance",
            "updated_at",
        ]
    )
    return decision, events


# ---------------------------------------------------------------------------------------------
# Executions
# ---------------------------------------------------------------------------------------------


def _existing_fill(external_ref: str, proposal_id: int) -> Execution | None:
    """The fill already booked under ``external_ref``, if it was booked for this proposal."""
    existing = Execution.objects.filter(external_ref=external_ref).first()
    if existing is not None and existing.proposal_id != proposal_id:
        raise DuplicateExternalRef(
            f"External reference {external_ref!r} is already booked against another proposal."
        )
    return existing


def _check_executor(proposal: Proposal, actor) -> None:
    """Who may record fills of ``proposal``: an ``execute_trades`` holder who is neither its
    author nor one of its approvers (rules 1 and 10)."""
    if not has_role(actor, proposal.fund, FundRole.EXECUTE_TRADES):
        raise NotPermitted("Recording an execution needs the execute_trades role on the fund.")
    if proposal.author_id == actor.pk:
        raise SegregationOfDuties("The author of a proposal cannot execute it.")
    if proposal.decisions.filter(user=actor, verdict=Decision.Verdict.APPROVE).exists():
        raise SegregationOfDuties("Someone who approved a proposal cannot execute it.")


def _check_execution_allowed(
    proposal: Proposal,
    *,
    quantity: Decimal,
    price_usd: Decimal,
    cost_usd: Decimal,
    executed_at: dt.datetime,
    now: dt.datetime,
) -> dict:
    """Rule 10 for one attempted fill; returns the consensus evidence it was checked against."""
    from portfolio.prices.selectors import consensus_for

    policies.transition("execute", proposal.state)

    def refuse(code: str, detail: str, **context):
        raise ExecutionRefused(detail, code=code, context=context)

    if proposal.approval_expires_at <= now:
        refuse("approval_expired", "The approval has expired; the proposal accepts no fill.")
    if executed_at > now:
        refuse("executed_in_future", "The execution time is in the future.")
    if executed_at < proposal.decided_at:
        refuse("executed_before_approval", "The execution time is before the approval.")
    if price_usd > proposal.limit_price_usd:
        refuse(
            "above_limit_price",
            f"Price USD {price_usd} is above the limit price USD {proposal.limit_price_usd}.",
        )
    remaining = proposal.notional_usd - proposal.executed_notional_usd
    if cost_usd > remaining:
        refuse(
            "over_notional",
            f"The fill costs USD {cost_usd} but only USD {remaining} of the approved notional "
            "remains.",
            remaining_usd=str(remaining),
        )
    consensus = consensus_for(proposal.asset, at=executed_at)
    evidence = consensus.as_json()
    if not consensus.usable:
        flags = ", ".join(consensus.flags) or "no price"
        refuse(
            "consensus_unusable",
            f"The consensus price at the execution time cannot back a fill ({flags}).",
            consensus=evidence,
        )
    deviation = abs(price_usd - consensus.price) / consensus.price
    if deviation > proposal.fund.price_tolerance:
        refuse(
            "price_outside_tolerance",
            f"Price USD {price_usd} is {deviation:.2%} from the consensus USD {consensus.price}; "
            f"the fund tolerates {proposal.fund.price_tolerance:.2%}.",
            consensus=evidence,
        )
    return evidence


def execution_record(
    *,
    proposal_id: int,
    actor,
    quantity: Decimal,
    price_usd: Decimal,
    fee_usd: Decimal,
    venue: str,
    external_ref: str,
    executed_at: dt.datetime,
    otp_token: str | None,
    close: bool = False,
) -> tuple[Execution, bool]:
    """Record one fill of an approved proposal; returns (execution, created).

    Preconditions: lock held on the proposal; ``actor`` holds ``execute_trades``, is not the
    author and did not approve it; state ``approved`` and not past its expiry; executed between
    the approval and now; price at most the limit price and within the fund's tolerance of a
    usable consensus price at the execution time; total cost within the approved notional;
    ``otp_token`` is a fresh code from the actor's confirmed TOTP device (step-up), consumed
    once the other checks pass. The same ``external_ref`` again (same proposal, same permitted
    actor) returns the booked fill (``created`` False) and books nothing; on another proposal it
    is refused.
    Effects: the execution; ledger entries (asset in, cash out, fee out); the executed notional
    grows; the fill that uses the whole notional, or ``close=True``, moves the proposal to
    ``executed``. Audit ``execution.recorded`` (and ``proposal.executed``); a refusal is audited
    as ``execution.refused``. Arithmetic is exact (``EXACT_DIGITS``).
    """
    if quantity <= 0 or price_usd <= 0 or fee_usd < 0:
        raise ValidationError("Quantity and price must be positive and the fee not negative.")
    if not external_ref.strip() or not venue.strip():
        raise ValidationError({"external_ref": "The venue and external reference are required."})
    if timezone.is_naive(executed_at):
        raise ValidationError({"executed_at": "The execution time needs its UTC offset."})
    refusal = None
    with localcontext(prec=EXACT_DIGITS), transaction.atomic():
        cost_usd = quantity * price_usd + fee_usd
        proposal = _lock_proposal(proposal_id)
        existing = None
        try:
            _check_executor(proposal, actor)
            existing = _existing_fill(external_ref, proposal_id)
            if existing is None:
                evidence = _check_execution_allowed(
                    proposal,
                    quantity=quantity,
                    price_usd=price_usd,
                    cost_usd=cost_usd,
                    executed_at=executed_at,
                    now=timezone.now(),
                )
                device = second_factor_confirm(user=actor, otp_token=otp_token)
        except GovernanceError as exc:
            refusal = exc
            audit_record(
                action="execution.refused",
                actor=actor,
                proposal=proposal,
                payload={
                    "code": exc.code,
                    "detail": exc.detail,
                    "external_ref": external_ref,
                    "quantity": str(quantity),
                    "price_usd": str(price_usd),
                    "fee_usd": str(fee_usd),
                },
            )
        else:
            if existing is not None:
                return existing, False
            execution = _book_fill(
                proposal,
                actor,
                quantity=quantity,
                price_usd=price_usd,
                fee_usd=fee_usd,
                cost_usd=cost_usd,
                venue=venue,
                external_ref=external_ref,
                executed_at=executed_at,
                evidence=evidence,
                confirmed_by_device=device,
                close=close,
            )
            return execution, True
    raise refusal


def _book_fill(proposal: Proposal, actor, *, close: bool, **fill) -> Execution:
    try:
        with transaction.atomic():
            execution = Execution.objects.create(proposal=proposal, recorded_by=actor, **fill)
    except IntegrityError as exc:
        # The same external reference was booked concurrently on another proposal.
        raise DuplicateExternalRef(
            f"External reference {fill['external_ref']!r} is already booked."
        ) from exc
    gross = execution.quantity * execution.price_usd
    common = {"fund": proposal.fund, "booked_at": execution.executed_at, "booked_by": actor}
    books.ledger_entry_book(
        kind=LedgerEntry.Kind.BUY,
        asset=proposal.asset,
        quantity=execution.quantity,
        value_usd=gross,
        reference=f"execution:{execution.pk}:asset",
        **common,
    )
    books.ledger_entry_book(
        kind=LedgerEntry.Kind.BUY,
        quantity=-gross,
        value_usd=-gross,
        reference=f"execution:{execution.pk}:cash",
        **common,
    )
    if execution.fee_usd:
        books.ledger_entry_book(
            kind=LedgerEntry.Kind.FEE,
            quantity=-execution.fee_usd,
            value_usd=-execution.fee_usd,
            reference=f"execution:{execution.pk}:fee",
            **common,
        )
    proposal.executed_notional_usd += execution.cost_usd
    audit_record(
        action="execution.recorded",
        actor=actor,
        proposal=proposal,
        payload={
            "execution": execution.pk,
            "external_ref": execution.external_ref,
            "venue": execution.venue,
            "quantity": str(execution.quantity),
            "price_usd": str(execution.price_usd),
            "fee_usd": str(execution.fee_usd),
            "cost_usd": str(execution.cost_usd),
            "executed_at": execution.executed_at.isoformat(),
            "executed_notional_usd": str(proposal.executed_notional_usd),
            "confirmed_by_device": execution.confirmed_by_device,
        },
    )
    if close or proposal.executed_notional_usd == proposal.notional_usd:
        _mark_executed(proposal, actor, reason="closed with the fill" if close else "fully filled")
    proposal.save(update_fields=["executed_notional_usd", "state", "updated_at"])
    return execution


def _mark_executed(proposal: Proposal, actor, *, reason: str) -> None:
    proposal.state = policies.transition("execute", proposal.state)
    audit_record(
        action="proposal.executed",
        actor=actor,
        proposal=proposal,
        payload={
            "executed_notional_usd": str(proposal.executed_notional_usd),
            "unspent_usd": str(proposal.notional_usd - proposal.executed_notional_usd),
            "reason": reason,
        },
    )


def proposal_close(*, proposal_id: int, actor, reason: str = "") -> Proposal:
    """Close a partly executed proposal: the rest of its notional is released.

    Preconditions: lock held; state ``approved``, not past its expiry, with at least one fill;
    ``actor`` may execute it (holds ``execute_trades``, neither author nor approver).
    Effects: state ``executed``; audit ``proposal.executed`` with the unspent notional.
    """
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        _check_executor(proposal, actor)
        policies.transition("execute", proposal.state)
        if proposal.approval_expires_at <= timezone.now():
            raise ExecutionRefused(
                "The approval has expired; it is closed by expiry.", code="approval_expired"
            )
        if proposal.executed_notional_usd == 0:
            raise InvalidTransition(
                "Nothing has been executed; let the approval expire or have the author withdraw."
            )
        with localcontext(prec=EXACT_DIGITS):
            _mark_executed(proposal, actor, reason=reason or "closed by the treasury")
        proposal.save(update_fields=["state", "updated_at"])
    return proposal


def proposals_expire_due(*, now: dt.datetime | None = None) -> list[int]:
    """Expire every approved proposal whose execution window has passed; returns their ids.

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
            proposal = _lock_proposal(proposal_id)
            if proposal.state != ProposalState.APPROVED or proposal.approval_expires_at > now:
                continue
            proposal.state = policies.transition("expire", proposal.state)
            proposal.save(update_fields=["state", "updated_at"])
            audit_record(
                action="proposal.expired",
                proposal=proposal,
                payload={
                    "approval_expires_at": proposal.approval_expires_at.isoformat(),
                    "executed_notional_usd": str(proposal.executed_notional_usd),
                },
            )
            expired.append(proposal_id)
    return expired
