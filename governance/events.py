"""One writer per audit action: each builds its action's payload and appends the event.

The services call these inside the transaction of the change they record (``audit_record``
refuses otherwise), so a payload has one shape wherever the action is written, and the chain's
mechanics stay in ``governance.audit``. Amounts are written as decimal strings, times in ISO 8601.
"""

from collections.abc import Iterable

from governance.audit import audit_record
from governance.exceptions import GovernanceError
from governance.models import AuditEvent, Decision, Execution, PolicyStage, Proposal
from governance.records import rows_json
from governance.vocabulary import AuditAction as Action
from portfolio.calculations import decimal_string
from portfolio.disclosure import Disclosure
from portfolio.mandate import Mandate
from portfolio.models import Fund


def stages_json(stages: Iterable) -> list[dict]:
    """Policy stages (models or ``StageSpec``) as they are recorded."""
    return [
        {
            "order": s.order,
            "name": s.name,
            "permission": s.permission,
            "quorum": s.quorum,
            "applies_from_usd": str(s.applies_from_usd),
            "kinds": list(s.kinds),
        }
        for s in stages
    ]


def _text(value) -> str | None:
    return None if value is None else str(value)


def proposal_terms_json(proposal: Proposal) -> dict:
    """The terms an author sets, as they are recorded and compared between edits: a buy's as
    they always were, and what a sale, transfer or intake adds (rule 15)."""
    terms = {
        "asset": proposal.asset.symbol if proposal.asset else "USD",
        "kind": proposal.kind,
        "notional_usd": _text(proposal.notional_usd),
        "limit_price_usd": _text(proposal.limit_price_usd),
        "funding_source": proposal.funding_source.name if proposal.funding_source else None,
        "rationale": proposal.rationale,
    }
    if proposal.moves_units:
        # As digits without storage zeros: an edit to the same quantity is no change.
        terms["quantity"] = decimal_string(proposal.quantity) if proposal.quantity else None
        terms["document_reference"] = proposal.document_reference
    for name in ("account", "destination_account"):
        account = getattr(proposal, name)
        if account is not None:
            terms[name] = {"id": account.pk, "name": account.name}
    return terms


def _refusal_json(refusal: GovernanceError) -> dict:
    return {"code": refusal.code, "detail": refusal.detail}


def _write(action: Action, *, actor=None, fund=None, proposal=None, **payload) -> AuditEvent:
    return audit_record(action=action, actor=actor, fund=fund, proposal=proposal, payload=payload)


def _on_version(action: Action, *, actor, proposal: Proposal, **payload) -> AuditEvent:
    """An event about the proposal's current version."""
    return _write(action, actor=actor, proposal=proposal, version=proposal.version, **payload)


# ---------------------------------------------------------------------------------------------
# Roles, policies, prices, contributions
# ---------------------------------------------------------------------------------------------


def _person(user) -> dict:
    return {"user": user.username, "user_id": user.pk}


def changes_json(before: dict, after: dict) -> dict:
    """``{field: {"old": ..., "new": ...}}`` for each field whose value differs (the values as
    recorded: plain JSON)."""
    return {
        name: {"old": before.get(name), "new": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def _roles_held(before: list[str], after: list[str]) -> dict:
    return {"changes": {"roles": {"old": sorted(before), "new": sorted(after)}}}


def role_granted_event(
    *, actor, fund, user, role: str, held: list[str], admin_change=None, via=None
) -> AuditEvent:
    """``held``: the user's direct roles on the fund before the grant."""
    grant = {**_person(user), "role": role, **_roles_held(held, [*held, role])}
    if admin_change is not None:
        grant["admin_change"] = admin_change.pk
    if via:
        grant["via"] = via
    return _write(Action.ROLE_GRANTED, actor=actor, fund=fund, **grant)


def role_revoked_event(*, actor, fund, user, role: str, held: list[str], via=None) -> AuditEvent:
    """``held``: the user's direct roles on the fund before the revocation."""
    after = [r for r in held if r != role]
    grant = {**_person(user), "role": role, **_roles_held(held, after)}
    if via:
        grant["via"] = via
    return _write(Action.ROLE_REVOKED, actor=actor, fund=fund, **grant)


def policy_drafted_event(*, actor, policy) -> AuditEvent:
    stages = list(policy.stages.order_by("order"))
    described = {
        "version": policy.version,
        "note": policy.note,
        "stages": stages_json(stages),
        "disclosure": vars(Disclosure.of(policy)),
        "mandate": Mandate.of(policy).as_json(),
    }
    rows = rows_json(policy, *stages)
    return _write(Action.POLICY_DRAFTED, actor=actor, fund=policy.fund, **described, rows=rows)


def policy_published_event(*, actor, policy) -> AuditEvent:
    stages = stages_json(policy.stages.all())
    return _write(
        Action.POLICY_PUBLISHED,
        actor=actor,
        fund=policy.fund,
        version=policy.version,
        drafted_by=policy.drafted_by_id,
        stages=stages,
        disclosure=vars(Disclosure.of(policy)),
        mandate=Mandate.of(policy).as_json(),
        rows=rows_json(policy),
    )


def price_entered_manually_event(*, actor, price) -> AuditEvent:
    observed_at = price.observed_at.isoformat()
    return _write(
        Action.PRICE_ENTERED_MANUALLY,
        actor=actor,
        price=price.pk,
        asset=price.asset.symbol,
        price_usd=str(price.price),
        observed_at=observed_at,
    )


def contribution_recorded_event(*, actor, entry, memo: str, opening: bool = False) -> AuditEvent:
    """``entry`` is the ledger entry just booked, with the values it was booked with;
    ``opening`` marks an opening balance the system booked (no proposal behind it)."""
    extra = {"opening": True} if opening else {}
    return _write(
        Action.CONTRIBUTION_RECORDED,
        actor=actor,
        fund=entry.fund,
        ledger_entry=entry.pk,
        asset=entry.asset.symbol if entry.asset else "USD",
        quantity=str(entry.quantity),
        value_usd=str(entry.value_usd),
        funding_source=entry.funding_source.name,
        memo=memo,
        **extra,
        rows=rows_json(entry),
    )


# ---------------------------------------------------------------------------------------------
# A proposal's life
# ---------------------------------------------------------------------------------------------


def proposal_created_event(*, actor, proposal: Proposal) -> AuditEvent:
    terms = proposal_terms_json(proposal)
    return _on_version(Action.PROPOSAL_CREATED, actor=actor, proposal=proposal, **terms)


def proposal_updated_event(*, actor, proposal: Proposal, changes: dict) -> AuditEvent:
    """``changes`` maps each changed term to ``{"from": …, "to": …}``."""
    return _on_version(Action.PROPOSAL_UPDATED, actor=actor, proposal=proposal, changes=changes)


def proposal_submitted_event(
    *, actor, proposal: Proposal, stages: Iterable[PolicyStage], compliance_outcome: str
) -> AuditEvent:
    return _on_version(
        Action.PROPOSAL_SUBMITTED,
        actor=actor,
        proposal=proposal,
        policy_version=proposal.policy.version,
        stages=stages_json(stages),
        compliance=compliance_outcome,
        terms=proposal_terms_json(proposal),
    )


def proposal_submit_refused_event(
    *, actor, proposal: Proposal, refusal: GovernanceError, compliance: dict
) -> AuditEvent:
    refused = {**_refusal_json(refusal), "compliance": compliance}
    return _write(Action.PROPOSAL_SUBMIT_REFUSED, actor=actor, proposal=proposal, **refused)


def proposal_withdrawn_event(
    *, actor, proposal: Proposal, from_state: str, reason: str
) -> AuditEvent:
    why = {"from_state": from_state, "reason": reason}
    return _on_version(Action.PROPOSAL_WITHDRAWN, actor=actor, proposal=proposal, **why)


def decision_recorded_event(*, decision: Decision) -> AuditEvent:
    return _on_version(
        Action.DECISION_RECORDED,
        actor=decision.user,
        proposal=decision.proposal,
        decision=decision.pk,
        stage=decision.stage.order,
        verdict=decision.verdict,
        comment=decision.comment,
        confirmed_by_device=decision.confirmed_by_device,
        rows=rows_json(decision),
    )


def decision_refused_event(
    *, actor, proposal: Proposal, verdict: str, refusal: GovernanceError
) -> AuditEvent:
    refused = {"verdict": verdict, **_refusal_json(refusal)}
    return _on_version(Action.DECISION_REFUSED, actor=actor, proposal=proposal, **refused)


def proposal_stage_completed_event(
    *, actor, proposal: Proposal, stage: PolicyStage, next_stage: PolicyStage
) -> AuditEvent:
    stages = {"stage": stage.order, "next_stage": next_stage.order}
    return _on_version(Action.PROPOSAL_STAGE_COMPLETED, actor=actor, proposal=proposal, **stages)


def proposal_approved_event(
    *, actor, proposal: Proposal, stage: PolicyStage, compliance_outcome: str
) -> AuditEvent:
    expires = proposal.approval_expires_at.isoformat()
    return _on_version(
        Action.PROPOSAL_APPROVED,
        actor=actor,
        proposal=proposal,
        stage=stage.order,
        approval_expires_at=expires,
        compliance=compliance_outcome,
    )


def proposal_rejected_event(*, actor, proposal: Proposal, stage: PolicyStage) -> AuditEvent:
    return _on_version(Action.PROPOSAL_REJECTED, actor=actor, proposal=proposal, stage=stage.order)


def proposal_changes_requested_event(
    *, actor, proposal: Proposal, stage: PolicyStage
) -> AuditEvent:
    action = Action.PROPOSAL_CHANGES_REQUESTED
    return _on_version(action, actor=actor, proposal=proposal, stage=stage.order)


# ---------------------------------------------------------------------------------------------
# Execution and expiry
# ---------------------------------------------------------------------------------------------


def execution_recorded_event(*, execution: Execution, entries: list) -> AuditEvent:
    """``entries`` are the ledger entries the fill booked."""
    proposal = execution.proposal
    return _write(
        Action.EXECUTION_RECORDED,
        actor=execution.recorded_by,
        proposal=proposal,
        execution=execution.pk,
        external_ref=execution.external_ref,
        venue=execution.venue,
        quantity=str(execution.quantity),
        price_usd=str(execution.price_usd),
        fee_usd=str(execution.fee_usd),
        cost_usd=str(execution.cost_usd),
        executed_at=execution.executed_at.isoformat(),
        executed_notional_usd=str(proposal.executed_notional_usd),
        confirmed_by_device=execution.confirmed_by_device,
        rows=rows_json(execution, *entries),
    )


def execution_refused_event(
    *, actor, proposal: Proposal, refusal: GovernanceError, fill: dict
) -> AuditEvent:
    """``fill`` is what was attempted: external reference, quantity, price and fee."""
    attempted = {name: str(fill[name]) for name in ("quantity", "price_usd", "fee_usd")}
    attempted["external_ref"] = fill["external_ref"]
    refused = {**_refusal_json(refusal), **attempted}
    return _write(Action.EXECUTION_REFUSED, actor=actor, proposal=proposal, **refused)


def proposal_executed_event(*, actor, proposal: Proposal, reason: str) -> AuditEvent:
    spent = {
        "executed_notional_usd": str(proposal.executed_notional_usd),
        "unspent_usd": str(proposal.remaining_usd),
    }
    return _write(Action.PROPOSAL_EXECUTED, actor=actor, proposal=proposal, reason=reason, **spent)


def proposal_expired_event(*, proposal: Proposal) -> AuditEvent:
    """Written by the system (no actor) when the execution window passes."""
    window = {
        "approval_expires_at": proposal.approval_expires_at.isoformat(),
        "executed_notional_usd": str(proposal.executed_notional_usd),
    }
    return _write(Action.PROPOSAL_EXPIRED, proposal=proposal, **window)


def second_factor_enrolled_event(*, device) -> AuditEvent:
    enrolled = {"device": device.persistent_id, "name": device.name}
    return _write(Action.SECOND_FACTOR_ENROLLED, actor=device.user, **enrolled)


def second_factor_reset_event(*, actor, user, devices: list[str], admin_change) -> AuditEvent:
    reset = {**_person(user), "devices": devices, "admin_change": admin_change.pk}
    return _write(Action.SECOND_FACTOR_RESET, actor=actor, **reset)


# ---------------------------------------------------------------------------------------------
# Back-office changes: four eyes on who may act (DESIGN rule 14)
# ---------------------------------------------------------------------------------------------


def _admin_change_json(change) -> dict:
    return {
        "admin_change": change.pk,
        "kind": change.kind,
        **_person(change.user),
        **({"role": change.role} if change.role else {}),
    }


def admin_change_requested_event(*, change) -> AuditEvent:
    return _write(
        Action.ADMIN_CHANGE_REQUESTED,
        actor=change.requested_by,
        fund=change.fund,
        reason=change.reason,
        **_admin_change_json(change),
    )


def admin_change_confirmed_event(*, change) -> AuditEvent:
    confirmed = {
        "device": change.confirmed_by_device,
        "effective_at": change.effective_at.isoformat(),
    }
    return _write(
        Action.ADMIN_CHANGE_CONFIRMED,
        actor=change.confirmed_by,
        fund=change.fund,
        **_admin_change_json(change),
        **confirmed,
    )


def admin_change_cancelled_event(*, change) -> AuditEvent:
    return _write(
        Action.ADMIN_CHANGE_CANCELLED,
        actor=change.cancelled_by,
        fund=change.fund,
        **_admin_change_json(change),
    )


def user_access_changed_event(*, actor, user, before: dict, admin_change=None) -> AuditEvent:
    """``before``: ``is_staff`` and ``is_superuser`` as they were."""
    after = {"is_staff": user.is_staff, "is_superuser": user.is_superuser}
    access = {**_person(user), **after, "changes": changes_json(before, after)}
    if admin_change is not None:
        access["admin_change"] = admin_change.pk
    return _write(Action.USER_ACCESS_CHANGED, actor=actor, **access)


_DEACTIVATED = {"is_active": {"old": True, "new": False}}
_REACTIVATED = {"is_active": {"old": False, "new": True}}


def user_deactivated_event(*, actor, user, voided: list[int]) -> AuditEvent:
    deactivated = {**_person(user), "voided_decisions": voided, "changes": _DEACTIVATED}
    return _write(Action.USER_DEACTIVATED, actor=actor, **deactivated)


def user_password_set_event(*, actor, user, had_password: bool, via=None) -> AuditEvent:
    """Never the hash: whether the account had a usable password before, and that it has one."""
    old = "set" if had_password else "none"
    password = {**_person(user), "changes": {"password": {"old": old, "new": "set"}}}
    if via:
        password["via"] = via
    return _write(Action.USER_PASSWORD_SET, actor=actor, **password)


def user_account_changed_event(*, user, created: bool, changes: dict, via: dict) -> AuditEvent:
    """An account changed outside the services (``governance.account_record``): no actor."""
    changed = {**_person(user), "created": created, "changes": changes, "via": via}
    return _write(Action.USER_ACCOUNT_CHANGED, **changed)


def user_reactivated_event(*, actor, user, admin_change) -> AuditEvent:
    reactivated = {**_person(user), "admin_change": admin_change.pk, "changes": _REACTIVATED}
    return _write(Action.USER_REACTIVATED, actor=actor, **reactivated)


def decision_voided_event(*, actor, proposal: Proposal, decision: Decision, reason: str):
    voided = {
        "decision": decision.pk,
        **_person(decision.user),
        "stage": decision.stage.order,
        "reason": reason,
        "rows": rows_json(decision),
    }
    return _on_version(Action.DECISION_VOIDED, actor=actor, proposal=proposal, **voided)


def proposal_stage_reopened_event(*, actor, proposal: Proposal, stage: PolicyStage):
    return _on_version(
        Action.PROPOSAL_STAGE_REOPENED, actor=actor, proposal=proposal, stage=stage.order
    )


# ---------------------------------------------------------------------------------------------
# The back office on the record: funds, assets, funding sources, schedules (issue 14, part 6)
# ---------------------------------------------------------------------------------------------


def _record_json(instance, via: dict) -> dict:
    return {
        "model": instance._meta.label_lower,
        "object_id": instance.pk,
        "object": str(instance),
        "via": via,
    }


def _record_fund(instance):
    """The fund a back-office record belongs to (the fund itself, or its ``fund``), so that
    fund's auditors see the event."""
    return instance if isinstance(instance, Fund) else getattr(instance, "fund", None)


def record_created_event(*, actor, instance, after: dict, via: dict) -> AuditEvent:
    created = {**_record_json(instance, via), "changes": changes_json({}, after)}
    return _write(Action.RECORD_CREATED, actor=actor, fund=_record_fund(instance), **created)


def record_changed_event(*, actor, instance, before: dict, after: dict, via: dict) -> AuditEvent:
    changed = {**_record_json(instance, via), "changes": changes_json(before, after)}
    return _write(Action.RECORD_CHANGED, actor=actor, fund=_record_fund(instance), **changed)


def record_deleted_event(*, actor, instance, object_id, before: dict, via: dict) -> AuditEvent:
    deleted = {**_record_json(instance, via), "object_id": object_id}
    deleted["changes"] = changes_json(before, {})
    fund = _record_fund(instance)
    fund = None if fund is instance else fund  # a deleted fund is no longer there to point at
    return _write(Action.RECORD_DELETED, actor=actor, fund=fund, **deleted)


# ---------------------------------------------------------------------------------------------
# Reconciliation of custody accounts with the ledger (portfolio.reconciliation)
# ---------------------------------------------------------------------------------------------


def _account_json(account) -> dict:
    return {"account": account.pk, "account_name": account.name, "chain": account.chain}


def reconciliation_break_opened_event(*, break_) -> AuditEvent:
    """``break_`` was just opened by its observation (no actor: a chain reading, or the statement
    of the observation's uploader)."""
    observation = break_.observation
    return _write(
        Action.RECONCILIATION_BREAK_OPENED,
        actor=observation.recorded_by,
        fund=break_.account.fund,
        reconciliation_break=break_.pk,
        **_account_json(break_.account),
        asset=break_.asset.symbol,
        source=observation.source,
        observation=observation.pk,
        observed_quantity=decimal_string(break_.observed_quantity),
        ledger_quantity=decimal_string(break_.ledger_quantity),
        difference=decimal_string(break_.difference),
        observed_at=observation.observed_at.isoformat(),
        block_number=observation.block_number,
    )


def reconciliation_break_explained_event(*, actor, break_) -> AuditEvent:
    return _write(
        Action.RECONCILIATION_BREAK_EXPLAINED,
        actor=actor,
        fund=break_.account.fund,
        proposal=break_.proposal,
        reconciliation_break=break_.pk,
        **_account_json(break_.account),
        asset=break_.asset.symbol,
        difference=decimal_string(break_.difference),
        explanation=break_.explanation,
        linked_proposal=break_.proposal_id,
    )


def reconciliation_statement_recorded_event(*, actor, account, reference: str, observations):
    """``observations``: the balances the statement gave, one per asset."""
    return _write(
        Action.RECONCILIATION_STATEMENT_RECORDED,
        actor=actor,
        fund=account.fund,
        **_account_json(account),
        statement=reference,
        balances=[
            {
                "observation": o.pk,
                "asset": o.asset.symbol,
                "balance": decimal_string(o.observed_quantity),
                "ledger": decimal_string(o.ledger_quantity),
                "as_of": o.observed_at.isoformat(),
            }
            for o in observations
        ],
    )


# Custody accounts: four eyes on where the fund's coins are kept (rule 14)
# ---------------------------------------------------------------------------------------------


def _account_terms(source) -> dict:
    """An account's terms (of the account or of a change asking for them), as recorded."""
    return {
        "name": source.name,
        "kind": source.kind,
        "chain": source.chain,
        "address": source.address,
        "account_reference": source.account_reference,
    }


def _custody_change_json(change) -> dict:
    return {
        "custody_change": change.pk,
        "custody_action": change.action,
        "account": change.account_id,
        "terms": _account_terms(change),
    }


def custody_change_requested_event(*, change, before: dict | None) -> AuditEvent:
    """``before``: the account's terms when the change was asked for (``None`` for an add)."""
    requested = {**_custody_change_json(change), "reason": change.reason}
    if before is not None:
        requested["changes"] = changes_json(before, _account_terms(change))
    return _write(
        Action.CUSTODY_CHANGE_REQUESTED, actor=change.requested_by, fund=change.fund, **requested
    )


def custody_change_confirmed_event(*, change, account, before: dict | None, device: str):
    """``account``: as the confirmation left it; ``before``: its terms until then (``None`` for
    an add); ``device``: the confirmer's authenticator that gave the one-time code."""
    confirmed = {
        **_custody_change_json(change),
        "requested_by": change.requested_by_id,
        "device": device,
        "usable_from": account.usable_from.isoformat(),
        "changes": changes_json(before or {}, _account_terms(account)),
    }
    return _write(
        Action.CUSTODY_CHANGE_CONFIRMED, actor=change.decided_by, fund=change.fund, **confirmed
    )


def custody_change_cancelled_event(*, change, reason: str = "") -> AuditEvent:
    """``reason``: why it was cancelled other than by a person asking (the account removed)."""
    cancelled = _custody_change_json(change)
    if reason:
        cancelled["reason"] = reason
    return _write(
        Action.CUSTODY_CHANGE_CANCELLED, actor=change.decided_by, fund=change.fund, **cancelled
    )


def custody_account_removed_event(*, actor, account, reason: str, cancelled: list[int]):
    """``cancelled``: the pending changes of the account the removal cancelled."""
    removed = {
        "account": account.pk,
        "terms": _account_terms(account),
        "reason": reason,
        "removed_at": account.removed_at.isoformat(),
        "cancelled_changes": cancelled,
        "changes": {"active": {"old": True, "new": False}},
    }
    return _write(Action.CUSTODY_ACCOUNT_REMOVED, actor=actor, fund=account.fund, **removed)
