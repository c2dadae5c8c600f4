"""Reads of governance data, already scoped to what the user may see."""

from collections import defaultdict
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Prefetch, QuerySet, Sum

from governance import compliance, policies
from governance.models import (
    ApprovalPolicy,
    AuditEvent,
    Decision,
    Execution,
    Proposal,
    ProposalState,
)
from governance.roles import funds_for_user
from portfolio import selectors as books
from portfolio.models import Asset, Fund
from portfolio.prices.selectors import consensus_for_assets


def policy_in_force(fund: Fund) -> ApprovalPolicy | None:
    """The newest published policy version of ``fund``."""
    return (
        ApprovalPolicy.objects.filter(fund=fund, published_at__isnull=False)
        .order_by("-version")
        .first()
    )


def proposal_list_for_user(user) -> QuerySet[Proposal]:
    """Proposals of every fund the user holds a role in, with what the API shows prefetched."""
    return (
        Proposal.objects.filter(fund__in=funds_for_user(user))
        .select_related("fund", "asset", "author", "funding_source", "policy", "current_stage")
        .prefetch_related(
            "policy__stages",
            Prefetch(
                "decisions",
                queryset=Decision.objects.select_related("user", "stage").order_by(
                    "created_at", "id"
                ),
            ),
        )
    )


def proposal_events(proposal: Proposal) -> QuerySet[AuditEvent]:
    """The proposal's audit timeline, oldest first."""
    return proposal.events.select_related("actor").order_by("sequence")


def proposal_stage_statuses(proposal: Proposal) -> list[policies.StageStatus]:
    """Each applicable stage of the proposal's policy snapshot with its current-version approvals.

    Uses ``proposal.policy.stages`` and ``proposal.decisions`` as prefetched by
    ``proposal_list_for_user``, so listing proposals costs no query per proposal.
    """
    if proposal.policy is None:
        return []
    applicable = policies.applicable_stages(proposal.policy.stages.all(), proposal.notional_usd)
    verdicts: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for decision in proposal.decisions.all():
        if decision.proposal_version == proposal.version:
            verdicts[decision.stage.order].append((decision.user.username, decision.verdict))
    return policies.stage_statuses(
        applicable,
        state=proposal.state,
        current_order=proposal.current_stage.order if proposal.current_stage else None,
        verdicts_by_stage=verdicts,
    )


def proposal_executions(proposal: Proposal) -> QuerySet[Execution]:
    """The proposal's fills, oldest first."""
    return proposal.executions.select_related("recorded_by").order_by("executed_at", "id")


def reserved_notional_usd(
    fund: Fund, *, excluding: Proposal | None = None, asset_id: int | None = None
) -> Decimal:
    """Notional approved but not yet executed: cash already promised to other proposals
    (only to those buying ``asset_id``, when given)."""
    approved = Proposal.objects.filter(fund=fund, state=ProposalState.APPROVED)
    if asset_id is not None:
        approved = approved.filter(asset_id=asset_id)
    if excluding is not None:
        approved = approved.exclude(pk=excluding.pk)
    total = approved.aggregate(s=Sum(F("notional_usd") - F("executed_notional_usd")))["s"]
    return total or Decimal("0")


def compliance_facts(
    proposal: Proposal, *, final_approval: bool = False
) -> tuple[compliance.ComplianceFacts, dict]:
    """Gather from the books what pre-trade compliance judges, and the consensus price of the
    proposal's asset it rested on (as JSON, for the record).

    Holdings are valued at each asset's consensus price now, flagged or not; the asset's own
    consensus must be unflagged to back the final approval.
    """
    fund = proposal.fund
    holdings = books.fund_holdings(fund)
    assets = Asset.objects.in_bulk([h.asset_id for h in holdings] + [proposal.asset_id])
    consensus = consensus_for_assets(list(assets.values()))
    asset_value = Decimal("0")
    holdings_value = Decimal("0")
    unpriced = []
    for holding in holdings:
        price = consensus[holding.asset_id].price
        if price is None:
            unpriced.append(holding.symbol)
            continue
        value = holding.quantity * price
        holdings_value += value
        if holding.asset_id == proposal.asset_id:
            asset_value = value
    market = consensus[proposal.asset_id]
    facts = compliance.ComplianceFacts(
        asset_symbol=proposal.asset.symbol,
        notional_usd=proposal.notional_usd,
        whitelisted=fund.whitelisted_assets.filter(pk=proposal.asset_id).exists(),
        max_proposal_notional_usd=fund.max_proposal_notional_usd,
        max_asset_share=fund.max_asset_share,
        cash_usd=books.fund_cash_usd(fund),
        reserved_usd=reserved_notional_usd(fund, excluding=proposal),
        reserved_asset_usd=reserved_notional_usd(
            fund, excluding=proposal, asset_id=proposal.asset_id
        ),
        asset_value_usd=asset_value,
        holdings_value_usd=holdings_value,
        unpriced_symbols=tuple(unpriced),
        warn_at=Decimal(settings.ALEM_COMPLIANCE_WARN_AT),
        market_price_usd=market.price,
        price_flags=market.flags,
        limit_price_usd=proposal.limit_price_usd,
        final_approval=final_approval,
    )
    return facts, market.as_json()
