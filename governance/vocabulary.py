"""Alem's words: the audit actions and every phrase the pages and e-mails build from records.

One module, so that a new action, refusal or check gets its label and its sentences in one
place, and the translators find them together. Nothing here reads the database; the functions
that fill these phrases with a record's values are in ``governance.wording``.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditAction(models.TextChoices):
    """Every action the audit log records, with its label in plain words.

    ``governance.events`` holds one writer per action; an event whose action is not listed here
    (none is written today) still shows, as its own code.
    """

    ROLE_GRANTED = "role.granted", _("Role granted")
    ROLE_REVOKED = "role.revoked", _("Role revoked")
    POLICY_DRAFTED = "policy.drafted", _("Approval policy drafted")
    POLICY_PUBLISHED = "policy.published", _("Approval policy published")
    PRICE_ENTERED_MANUALLY = "price.entered_manually", _("Price entered manually")
    CONTRIBUTION_RECORDED = "contribution.recorded", _("Contribution recorded")
    PROPOSAL_CREATED = "proposal.created", _("Proposal created")
    PROPOSAL_UPDATED = "proposal.updated", _("Proposal edited")
    PROPOSAL_SUBMITTED = "proposal.submitted", _("Proposal submitted")
    PROPOSAL_SUBMIT_REFUSED = "proposal.submit_refused", _("Submission refused")
    PROPOSAL_WITHDRAWN = "proposal.withdrawn", _("Proposal withdrawn")
    DECISION_RECORDED = "decision.recorded", _("Decision recorded")
    DECISION_REFUSED = "decision.refused", _("Decision refused")
    PROPOSAL_STAGE_COMPLETED = "proposal.stage_completed", _("Stage completed")
    PROPOSAL_APPROVED = "proposal.approved", _("Proposal approved")
    PROPOSAL_REJECTED = "proposal.rejected", _("Proposal rejected")
    PROPOSAL_CHANGES_REQUESTED = "proposal.changes_requested", _("Changes requested")
    EXECUTION_RECORDED = "execution.recorded", _("Execution recorded")
    EXECUTION_REFUSED = "execution.refused", _("Execution refused")
    PROPOSAL_EXECUTED = "proposal.executed", _("Proposal executed")
    PROPOSAL_EXPIRED = "proposal.expired", _("Approval expired")
    SECOND_FACTOR_ENROLLED = "second_factor.enrolled", _("Authenticator enrolled")
    SECOND_FACTOR_RESET = "second_factor.reset", _("Authenticator reset")
    ADMIN_CHANGE_REQUESTED = "admin_change.requested", _("Back-office change requested")
    ADMIN_CHANGE_CONFIRMED = "admin_change.confirmed", _("Back-office change confirmed")
    ADMIN_CHANGE_CANCELLED = "admin_change.cancelled", _("Back-office change cancelled")
    USER_ACCESS_CHANGED = "user.access_changed", _("Back-office access changed")
    USER_DEACTIVATED = "user.deactivated", _("Account deactivated")
    USER_REACTIVATED = "user.reactivated", _("Account reactivated")
    USER_PASSWORD_SET = "user.password_set", _("Password set by an administrator")
    DECISION_VOIDED = "decision.voided", _("Approval voided")
    PROPOSAL_STAGE_REOPENED = "proposal.stage_reopened", _("Stage reopened")
    ROWS_BASELINED = "audit.rows_baselined", _("Records taken into the chain")
    USER_ACCOUNT_CHANGED = "user.account_changed", _("Account changed outside the back office")
    RECORD_CREATED = "back_office.record_created", _("Created in the back office")
    RECORD_CHANGED = "back_office.record_changed", _("Changed in the back office")
    RECORD_DELETED = "back_office.record_deleted", _("Deleted in the back office")
    RECONCILIATION_BREAK_OPENED = "reconciliation.break_opened", _("Reconciliation break opened")
    RECONCILIATION_BREAK_EXPLAINED = (
        "reconciliation.break_explained",
        _("Reconciliation break explained"),
    )
    RECONCILIATION_STATEMENT_RECORDED = (
        "reconciliation.statement_recorded",
        _("Custody statement recorded"),
    )
    CUSTODY_CHANGE_REQUESTED = "custody.change_requested", _("Custody account change requested")
    CUSTODY_CHANGE_CONFIRMED = "custody.change_confirmed", _("Custody account change confirmed")
    CUSTODY_CHANGE_CANCELLED = "custody.change_cancelled", _("Custody account change cancelled")
    CUSTODY_ACCOUNT_REMOVED = "custody.account_removed", _("Custody account removed")


# Written once by a migration (governance 0011), never by ``governance.events``: the snapshots of
# the records that existed before events carried them.
WRITTEN_BY_MIGRATIONS = (AuditAction.ROWS_BASELINED,)


# Actions that open a stage: a proposal waits at its current stage since the latest of these.
STAGE_OPENED = (
    AuditAction.PROPOSAL_SUBMITTED,
    AuditAction.PROPOSAL_STAGE_COMPLETED,
    AuditAction.PROPOSAL_STAGE_REOPENED,
)


# ---------------------------------------------------------------------------------------------
# Refusals: the rule behind each domain error's code, for the person who was refused
# ---------------------------------------------------------------------------------------------

REFUSALS = {
    "not_permitted": _("You do not hold the role on this fund that this action needs."),
    "second_factor_required": _(
        "This action needs a one-time code, and you have not set up an authenticator app yet."
    ),
    "second_factor_invalid": _(
        "The one-time code was wrong, already used or expired. Nothing was recorded; enter the "
        "current code from your authenticator app."
    ),
    "segregation_of_duties": _(
        "The author of a proposal can neither decide on it nor record its execution."
    ),
    "invalid_state": _("The proposal is no longer in a state that allows this action."),
    "stage_not_current": _("This stage is not the proposal's current stage."),
    "already_decided": _("You have already decided on this version of the proposal."),
    "compliance_blocked": _(
        "A pre-trade compliance check blocks this step; the checks below give the reasons."
    ),
    "no_policy_in_force": _(
        "The fund has no published approval policy, so nothing can be submitted."
    ),
    "policy_invalid": _("The approval policy's stages do not form a usable approval chain."),
    "four_eyes_required": _("A second person must make this change."),
    "approval_expired": _("The approval has expired; the proposal accepts no more fills."),
    "executed_in_future": _("The execution time is in the future."),
    "executed_before_approval": _("The execution time is before the proposal was approved."),
    "above_limit_price": _("The price is above the proposal's limit price."),
    "fee_above_limit": _(
        "The fee is a larger share of the fill's value (quantity × price) than the fund's "
        "mandate allows."
    ),
    "over_notional": _("The fill would spend more than the approved notional that remains."),
    "below_limit_price": _("The price is below the sale's lowest price."),
    "over_quantity": _("The fill would move more than the approved quantity that remains."),
    "insufficient_holdings": _(
        "The custody account does not hold what the fill takes out, its network fee included."
    ),
    "account_unusable": _(
        "A custody account the proposal names was removed or is still cooling off."
    ),
    "consensus_unusable": _(
        "There is no usable market price for this moment (stale, divergent or single-source), "
        "so the fill cannot be checked."
    ),
    "price_outside_tolerance": _(
        "The price is further from the market consensus than the fund's tolerance allows."
    ),
    "duplicate_external_ref": _(
        "This external reference is already booked against another proposal."
    ),
}

# ---------------------------------------------------------------------------------------------
# Compliance checks
# ---------------------------------------------------------------------------------------------

COMPLIANCE_CHECKS = {
    "whitelist": _("Asset on the fund's whitelist"),
    "single_proposal_limit": _("Single-proposal limit"),
    "cash": _("Cash available"),
    "concentration": _("Post-trade concentration"),
    "market_price": _("Usable market price"),
    "limit_price": _("Limit price against the market"),
    "lowest_price": _("Lowest sale price against the market"),
    "holdings": _("Coins available in the account"),
    "custody_accounts": _("Custody accounts usable"),
}

# What a compliance check found, per rule and outcome, worded from the check's values. The
# stored report keeps the English message for the API and the record; pages show these.
CHECK_SENTENCES = {
    "whitelist": {
        "pass": _("%(asset)s is on the fund's whitelist."),
        "block": _("%(asset)s is not on the fund's whitelist."),
    },
    "single_proposal_limit": {
        "pass": _(
            "The notional of USD %(notional)s is within the single-proposal limit of USD %(limit)s."
        ),
        "warn": _(
            "The notional of USD %(notional)s is close to the single-proposal limit of "
            "USD %(limit)s."
        ),
        "block": _(
            "The notional of USD %(notional)s exceeds the single-proposal limit of USD %(limit)s."
        ),
    },
    "cash": {
        "pass": _("Enough cash: USD %(available)s available, USD %(notional)s needed."),
        "warn": _(
            "The proposal would use almost all available cash: USD %(available)s available, "
            "USD %(notional)s needed."
        ),
        "block": _(
            "Not enough cash: USD %(available)s available after USD %(reserved)s reserved for "
            "approved proposals, USD %(notional)s needed."
        ),
    },
    "concentration": {
        "pass": _(
            "After the trade %(asset)s would be %(share)s%% of the fund; the limit is %(limit)s%%."
        ),
        "warn": _(
            "After the trade %(asset)s would be %(share)s%% of the fund, close to the limit of "
            "%(limit)s%%."
        ),
        "block": _(
            "After the trade %(asset)s would be %(share)s%% of the fund, above the limit of "
            "%(limit)s%%."
        ),
        "unpriced": _("Holdings cannot be valued: no price for %(unpriced)s."),
        "no_value": _("The fund has no value to measure a share against."),
    },
    "market_price": {
        "pass": _("%(asset)s has a usable consensus price of USD %(price)s."),
        "warn": _("The consensus price of %(asset)s cannot back an approval yet: %(flags)s"),
        "block": _("The consensus price of %(asset)s cannot back an approval: %(flags)s"),
    },
    "holdings": {
        "pass": _(
            "The account holds enough %(asset)s: %(available)s available, %(needed)s needed."
        ),
        "block": _(
            "Not enough %(asset)s in the account: %(available)s available after %(reserved)s "
            "reserved for approved operations, %(needed)s needed."
        ),
    },
    "custody_accounts": {
        "pass": _("The custody accounts named can be used."),
    },
    "lowest_price": {
        "pass": _("The lowest price is at or below the market."),
        "no_market": _("No market price to compare the lowest price with."),
        "warn": _(
            "The lowest price of USD %(limit)s is above the consensus price of USD %(market)s: "
            "the sale may not fill."
        ),
    },
    "limit_price": {
        "pass": _("The limit price is at or above the market."),
        "no_market": _("No market price to compare the limit price with."),
        "warn": _(
            "The limit price of USD %(limit)s is below the consensus price of USD %(market)s: the "
            "order may not fill."
        ),
    },
}


# ---------------------------------------------------------------------------------------------
# The proposal page: why a form is not offered, and the timeline in sentences
# ---------------------------------------------------------------------------------------------

DECISION_NOTES = {
    "segregation_of_duties": _(
        "You are the author of this proposal, so you cannot decide on it. The policy's "
        "stages decide; you can follow their progress here."
    ),
    "not_permitted": _(
        "The current stage is decided by holders of another role; you can follow its progress."
    ),
    "already_decided": _("You have decided on this version already; one person counts once."),
}

FILL_NOTES = {
    "segregation_of_duties": _("You are the author of this proposal, so you cannot execute it."),
    "approved_by_you": _("You approved this proposal, so someone else must execute it."),
    "approval_expired": _("The approval has expired; the proposal accepts no more fills."),
}

# Why an approval stopped counting (``decision.voided``'s reason).
VOID_REASONS = {
    "role_revoked": _("they no longer hold the stage's role."),
    "account_deactivated": _("their account was deactivated."),
    "stage_reopened": _("an earlier stage reopened, so this stage is decided again."),
}

VERDICT_SENTENCES = {
    "approve": _("%(actor)s approved version %(version)s at %(stage)s."),
    "reject": _("%(actor)s rejected version %(version)s at %(stage)s."),
    "request_changes": _("%(actor)s requested changes to version %(version)s at %(stage)s."),
}

EVENT_SENTENCES = {
    AuditAction.PROPOSAL_CREATED: _("%(actor)s drafted the proposal."),
    AuditAction.PROPOSAL_UPDATED: _("%(actor)s edited the proposal."),
    AuditAction.PROPOSAL_SUBMITTED: _(
        "%(actor)s submitted version %(version)s for review under policy version "
        "%(policy_version)s."
    ),
    AuditAction.PROPOSAL_SUBMIT_REFUSED: _(
        "%(actor)s tried to submit the proposal and was refused."
    ),
    AuditAction.PROPOSAL_WITHDRAWN: _("%(actor)s withdrew the proposal."),
    AuditAction.DECISION_REFUSED: _("A decision by %(actor)s was refused."),
    AuditAction.PROPOSAL_REJECTED: _("The proposal was rejected at %(stage)s."),
    AuditAction.PROPOSAL_CHANGES_REQUESTED: _("The proposal went back to its author for changes."),
    AuditAction.PROPOSAL_STAGE_COMPLETED: _("%(stage)s completed; %(next_stage)s opened."),
    AuditAction.DECISION_VOIDED: _(
        "The approval by %(person)s at %(stage)s no longer counts: %(reason)s"
    ),
    AuditAction.PROPOSAL_STAGE_REOPENED: _("%(stage)s reopened: it needs its approvals again."),
    AuditAction.PROPOSAL_APPROVED: _(
        "The proposal was approved; the approval is valid until %(expires)s."
    ),
    AuditAction.EXECUTION_RECORDED: _(
        "%(actor)s recorded a fill of %(quantity)s %(asset)s at USD %(price)s per unit, "
        "USD %(cost)s in all (reference %(reference)s)."
    ),
    AuditAction.EXECUTION_REFUSED: _("A fill recorded by %(actor)s was refused."),
    AuditAction.PROPOSAL_EXECUTED: _("The proposal was executed: USD %(executed)s spent."),
    AuditAction.PROPOSAL_EXPIRED: _("The approval expired before the proposal was fully executed."),
}
