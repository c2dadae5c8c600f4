"""One writer per audit action: each builds its action's payload and appends the event.

The services call these inside the transaction of the change they record (``audit_record``
refuses otherwise), so a payload has one shape wherever the action is written, and the chain's
mechanics stay in ``governance.audit``. Amounts are written as decimal strings, times in ISO 8601.
"""

from collections.abc import Iterable

from governance.audit import audit_record
from governance.exceptions import GovernanceError
from governance.models import AuditEvent, Decision, Execution, PolicyStage, Proposal
from governance.vocabulary import AuditAction as Action


def stages_json(stages: Iterable) -> list[dict]:
    """Policy stages (models or ``StageSpec``) as they are recorded."""
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


def proposal_terms_json(proposal: Proposal) -> dict:
    """The terms an author sets, as they are recorded and compared between edits."""
    return {
        "asset": proposal.asset.symbol,
        "side": proposal.side,
        "notional_usd": str(proposal.notional_usd),
        "limit_price_usd": str(proposal.limit_price_usd),
        "funding_source": proposal.funding_source.name,
        "rationale": proposal.rationale,
    }


def _refusal_json(refusal: GovernanceError) -> dict:
    return {"code": refusal.code, "detail": refusal.detail}


# ---------------------------------------------------------------------------------------------
# Roles, policies, prices, contributions
# ---------------------------------------------------------------------------------------------


def role_granted_event(*, actor, fund, user, role: str) -> AuditEvent:
    return audit_record(
        action=Action.ROLE_GRANTED,
        actor=actor,
        fund=fund,
        payload={"user": user.username, "user_id": user.pk, "role": role},
    )


def role_revoked_event(*, actor, fund, user, role: str) -> AuditEvent:
    return audit_record(
        action=Action.ROLE_REVOKED,
        actor=actor,
        fund=fund,
        payload={"user": user.username, "user_id": user.pk, "role": role},
    )


def policy_drafted_event(*, actor, policy, stages: Iterable) -> AuditEvent:
    return audit_record(
        action=Action.POLICY_DRAFTED,
        actor=actor,
        fund=policy.fund,
        payload={"version": policy.version, "note": policy.note, "stages": stages_json(stages)},
    )


def policy_published_event(*, actor, policy) -> AuditEvent:
    return audit_record(
        action=Action.POLICY_PUBLISHED,
        actor=actor,
        fund=policy.fund,
        payload={
            "version": policy.version,
            "drafted_by": policy.drafted_by_id,
            "stages": stages_json(policy.stages.all()),
        },
    )


def price_entered_manually_event(*, actor, price) -> AuditEvent:
    return audit_record(
        action=Action.PRICE_ENTERED_MANUALLY,
        actor=actor,
        payload={
            "price": price.pk,
            "asset": price.asset.symbol,
            "price_usd": str(price.price),
            "observed_at": price.observed_at.isoformat(),
        },
    )


def contribution_recorded_event(*, actor, entry, memo: str) -> AuditEvent:
    """``entry`` is the ledger entry just booked, with the values it was booked with."""
    return audit_record(
        action=Action.CONTRIBUTION_RECORDED,
        actor=actor,
        fund=entry.fund,
        payload={
            "ledger_entry": entry.pk,
            "asset": entry.asset.symbol if entry.asset else "USD",
            "quantity": str(entry.quantity),
            "value_usd": str(entry.value_usd),
            "funding_source": entry.funding_source.name,
            "memo": memo,
        },
    )


# ---------------------------------------------------------------------------------------------
# A proposal's life
# ---------------------------------------------------------------------------------------------


def proposal_created_event(*, actor, proposal: Proposal) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_CREATED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, **proposal_terms_json(proposal)},
    )


def proposal_updated_event(*, actor, proposal: Proposal, changes: dict) -> AuditEvent:
    """``changes`` maps each changed term to ``{"from": …, "to": …}``."""
    return audit_record(
        action=Action.PROPOSAL_UPDATED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "changes": changes},
    )


def proposal_submitted_event(
    *, actor, proposal: Proposal, stages: Iterable[PolicyStage], compliance_outcome: str
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_SUBMITTED,
        actor=actor,
        proposal=proposal,
        payload={
            "version": proposal.version,
            "policy_version": proposal.policy.version,
            "stages": stages_json(stages),
            "compliance": compliance_outcome,
            "terms": proposal_terms_json(proposal),
        },
    )


def proposal_submit_refused_event(
    *, actor, proposal: Proposal, refusal: GovernanceError, compliance: dict
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_SUBMIT_REFUSED,
        actor=actor,
        proposal=proposal,
        payload={**_refusal_json(refusal), "compliance": compliance},
    )


def proposal_withdrawn_event(
    *, actor, proposal: Proposal, from_state: str, reason: str
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_WITHDRAWN,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "from_state": from_state, "reason": reason},
    )


def decision_recorded_event(*, decision: Decision) -> AuditEvent:
    proposal = decision.proposal
    return audit_record(
        action=Action.DECISION_RECORDED,
        actor=decision.user,
        proposal=proposal,
        payload={
            "decision": decision.pk,
            "version": decision.proposal_version,
            "stage": decision.stage.order,
            "verdict": decision.verdict,
            "comment": decision.comment,
            "confirmed_by_device": decision.confirmed_by_device,
        },
    )


def decision_refused_event(
    *, actor, proposal: Proposal, verdict: str, refusal: GovernanceError
) -> AuditEvent:
    return audit_record(
        action=Action.DECISION_REFUSED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "verdict": verdict, **_refusal_json(refusal)},
    )


def proposal_stage_completed_event(
    *, actor, proposal: Proposal, stage: PolicyStage, next_stage: PolicyStage
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_STAGE_COMPLETED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "stage": stage.order, "next_stage": next_stage.order},
    )


def proposal_approved_event(
    *, actor, proposal: Proposal, stage: PolicyStage, compliance_outcome: str
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_APPROVED,
        actor=actor,
        proposal=proposal,
        payload={
            "version": proposal.version,
            "stage": stage.order,
            "approval_expires_at": proposal.approval_expires_at.isoformat(),
            "compliance": compliance_outcome,
        },
    )


def proposal_rejected_event(*, actor, proposal: Proposal, stage: PolicyStage) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_REJECTED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "stage": stage.order},
    )


def proposal_changes_requested_event(
    *, actor, proposal: Proposal, stage: PolicyStage
) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_CHANGES_REQUESTED,
        actor=actor,
        proposal=proposal,
        payload={"version": proposal.version, "stage": stage.order},
    )


# ---------------------------------------------------------------------------------------------
# Execution and expiry
# ---------------------------------------------------------------------------------------------


def execution_recorded_event(*, execution: Execution) -> AuditEvent:
    proposal = execution.proposal
    return audit_record(
        action=Action.EXECUTION_RECORDED,
        actor=execution.recorded_by,
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


def execution_refused_event(
    *, actor, proposal: Proposal, refusal: GovernanceError, fill: dict
) -> AuditEvent:
    """``fill`` is what was attempted: external reference, quantity, price and fee."""
    return audit_record(
        action=Action.EXECUTION_REFUSED,
        actor=actor,
        proposal=proposal,
        payload={
            **_refusal_json(refusal),
            "external_ref": fill["external_ref"],
            "quantity": str(fill["quantity"]),
            "price_usd": str(fill["price_usd"]),
            "fee_usd": str(fill["fee_usd"]),
        },
    )


def proposal_executed_event(*, actor, proposal: Proposal, reason: str) -> AuditEvent:
    return audit_record(
        action=Action.PROPOSAL_EXECUTED,
        actor=actor,
        proposal=proposal,
        payload={
            "executed_notional_usd": str(proposal.executed_notional_usd),
            "unspent_usd": str(proposal.remaining_usd),
            "reason": reason,
        },
    )


def proposal_expired_event(*, proposal: Proposal) -> AuditEvent:
    """Written by the system (no actor) when the execution window passes."""
    return audit_record(
        action=Action.PROPOSAL_EXPIRED,
        proposal=proposal,
        payload={
            "approval_expires_at": proposal.approval_expires_at.isoformat(),
            "executed_notional_usd": str(proposal.executed_notional_usd),
        },
    )


def second_factor_enrolled_event(*, device) -> AuditEvent:
    return audit_record(
        action=Action.SECOND_FACTOR_ENROLLED,
        actor=device.user,
        payload={"device": device.persistent_id, "name": device.name},
    )
