"""Pre-trade compliance as the services run it: judged under the fund's lock, kept as JSON."""

from django.utils import timezone

from governance import compliance
from governance.exceptions import ComplianceBlocked
from governance.models import Proposal
from governance.selectors import compliance_facts
from governance.services._locks import lock_fund


def compliance_judge(
    proposal: Proposal, *, at: str, final_approval: bool = False
) -> tuple[compliance.ComplianceReport, dict]:
    """Judge ``proposal`` now (rule 8); returns the report and its stored JSON form.

    Takes the fund's lock (the proposal's is held already), so compliance checks of one fund run
    one at a time until their transaction ends and two approvals cannot both count the same cash
    (rule 12). ``at`` names the step, for the record.
    """
    lock_fund(proposal.fund)
    facts, price_seen = compliance_facts(proposal, final_approval=final_approval)
    report = compliance.evaluate(facts)
    stored = {
        **report.as_json(),
        "checked_at": timezone.now().isoformat(),
        "checked_for": at,
        "price": price_seen,
    }
    return report, stored


def blocked_error(report: compliance.ComplianceReport, stored: dict) -> ComplianceBlocked:
    """The refusal of a step that compliance blocks, naming every blocking check."""
    reasons = " ".join(check.message for check in report.blocking)
    return ComplianceBlocked(f"Pre-trade compliance blocks this: {reasons}", context=stored)
