"""Pre-trade compliance as the services run it, kept as JSON."""

from django.utils import timezone

from governance import compliance
from governance.exceptions import ComplianceBlocked
from governance.models import Proposal
from governance.selectors import compliance_facts
from portfolio.prices.consensus import Consensus


def compliance_judge(
    proposal: Proposal,
    *,
    at: str,
    final_approval: bool = False,
    prices: dict[int, Consensus] | None = None,
) -> tuple[compliance.ComplianceReport, dict]:
    """Judge ``proposal`` now (rule 8); returns the report and its stored JSON form.

    Preconditions: where the step commits the fund's cash or policy (submission, final
    approval) the caller holds the fund's lock, so two approvals cannot both count the same
    cash (rule 12). ``prices``: the consensus prices read before any lock
    (``selectors.compliance_prices``); an asset they miss is priced here. ``at`` names the
    step, for the record.
    """
    facts, price_seen = compliance_facts(proposal, final_approval=final_approval, prices=prices)
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
