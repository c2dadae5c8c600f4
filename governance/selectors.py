"""Reads of governance data, already scoped to what the user may see."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db.models import (
    BigIntegerField,
    Count,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.timesince import timesince
from guardian.models import GroupObjectPermission, UserObjectPermission

from governance import compliance, operations, permissions, policies
from governance.models import (
    DECIDING_ROLES,
    REMAINING_USD,
    ApprovalPolicy,
    AuditEvent,
    Decision,
    Execution,
    Proposal,
    ProposalState,
)
from governance.roles import funds_for_user
from portfolio import selectors as books
from portfolio.models import Asset, Fund, FundRole, Position
from portfolio.prices.consensus import Consensus
from portfolio.prices.selectors import consensus_for_assets
from portfolio.reconciliation.selectors import open_breaks_by_fund


def policy_in_force(fund: Fund) -> ApprovalPolicy | None:
    """The newest published policy version of ``fund``."""
    return (
        ApprovalPolicy.objects.filter(fund=fund, published_at__isnull=False)
        .order_by("-version")
        .first()
    )


def proposal_list_for_user(user, *, fund_ids=None) -> QuerySet[Proposal]:
    """Proposals of every fund the user holds a role in, with what the API shows prefetched.

    The funds (``fund_ids`` when the caller has them, from ``request_roles``) are named in the
    query as values: the planner then walks the (fund, created_at desc, id desc) index for a
    page instead of sorting every proposal, which it cannot do behind the object permissions'
    subquery."""
    if fund_ids is None:
        fund_ids = funds_for_user(user).values_list("pk", flat=True)
    return _as_shown(Proposal.objects.filter(fund_id__in=list(fund_ids)))


def proposals_of_user(user) -> QuerySet[Proposal]:
    """The proposals of ``proposal_list_for_user``, scoped by a subquery of the user's funds: for
    reading one by id, where a query of its own for the funds would cost more than it saves."""
    return _as_shown(Proposal.objects.filter(fund__in=funds_for_user(user).values("pk")))


def _as_shown(proposals: QuerySet[Proposal]) -> QuerySet[Proposal]:
    return proposals.select_related(
        "fund",
        "asset",
        "author",
        "funding_source",
        "policy",
        "current_stage",
        "account",
        "destination_account",
    ).prefetch_related(
        "policy__stages",
        Prefetch(
            "decisions",
            queryset=Decision.objects.select_related("user", "stage").order_by("created_at", "id"),
        ),
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
    applicable = policies.applicable_stages(
        proposal.policy.stages.all(), proposal.notional_usd, proposal.kind
    )
    verdicts: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for decision in proposal.decisions.all():
        if decision.proposal_version == proposal.version and decision.counts:
            verdicts[decision.stage.order].append((decision.user.username, decision.verdict))
    return policies.stage_statuses(
        applicable,
        state=proposal.state,
        current_order=proposal.current_stage.order if proposal.current_stage else None,
        verdicts_by_stage=verdicts,
    )


def proposal_executions(proposal: Proposal) -> QuerySet[Execution]:
    """The proposal's fills, oldest first; no query while nothing is executed (every fill adds
    its cost to ``executed_notional_usd`` or its units to ``executed_quantity``)."""
    if not proposal.has_fills:
        return Execution.objects.none()
    return proposal.executions.select_related(
        "recorded_by", "account", "destination_account"
    ).order_by("executed_at", "id")


def realised_pnl_usd(executions) -> Decimal | None:
    """The profit or loss a sale's fills realised, summed; None before any fill."""
    realised = [e.realised_pnl_usd for e in executions if e.realised_pnl_usd is not None]
    return sum(realised, Decimal("0")) if realised else None


def _reserved(fund_id: int, *, excluding: Proposal | None) -> QuerySet[Proposal]:
    """Approved buys of the fund that may still spend (other than ``excluding``)."""
    approved = Proposal.objects.filter(
        fund_id=fund_id, state=ProposalState.APPROVED, kind=Proposal.Kind.BUY
    )
    return approved if excluding is None else approved.exclude(pk=excluding.pk)


def reserved_notional_usd(fund: Fund, *, excluding: Proposal | None = None) -> Decimal:
    """Notional approved but not yet executed: cash already promised to other proposals."""
    return _reserved(fund.pk, excluding=excluding).remaining_usd_total()


def _reserved_in_all_and_for_asset(proposal: Proposal) -> tuple[Decimal, Decimal]:
    """``reserved_notional_usd`` of the other proposals of ``proposal``'s fund, in all and for
    its asset alone, in one query."""
    totals = _reserved(proposal.fund_id, excluding=proposal).aggregate(
        all=Sum(REMAINING_USD), asset=Sum(REMAINING_USD, filter=Q(asset_id=proposal.asset_id))
    )
    return totals["all"] or Decimal("0"), totals["asset"] or Decimal("0")


def reserved_quantity(account_id: int, asset_id: int, *, excluding: Proposal | None) -> Decimal:
    """Units of ``asset_id`` that approved sales and transfers out of ``account_id`` (other than
    ``excluding``) will still take out."""
    approved = Proposal.objects.filter(
        account_id=account_id,
        asset_id=asset_id,
        state=ProposalState.APPROVED,
        kind__in=[Proposal.Kind.SELL, Proposal.Kind.TRANSFER],
    )
    if excluding is not None:
        approved = approved.exclude(pk=excluding.pk)
    total = approved.aggregate(total=Sum(F("quantity") - F("executed_quantity")))["total"]
    return total or Decimal("0")


def compliance_prices(proposal: Proposal) -> dict[int, Consensus]:
    """The consensus prices compliance values ``proposal``'s fund at: its asset's and each held
    asset's, keyed by asset id.

    Read before any lock (prices are market observations, not the fund's state), so that the
    price queries never hold up another decision; ``compliance_facts`` prices whatever asset the
    fund came to hold meanwhile.
    """
    held = Position.objects.filter(fund_id=proposal.fund_id, asset__isnull=False)
    assets = Asset.objects.filter(Q(pk=proposal.asset_id) | Q(pk__in=held.values("asset_id")))
    return consensus_for_assets(list(assets))


def compliance_facts(
    proposal: Proposal,
    *,
    final_approval: bool = False,
    prices: dict[int, Consensus] | None = None,
) -> tuple[compliance.ComplianceFacts, dict]:
    """Gather from the books what pre-trade compliance judges, and the consensus price of the
    proposal's asset it rested on (as JSON, for the record).

    Holdings are valued at each asset's consensus price (``prices`` where given, read now
    otherwise), flagged or not; the asset's own consensus must be unflagged to back the final
    approval.
    """
    fund = proposal.fund
    holdings, cash_usd = books.fund_holdings_and_cash(fund)
    consensus = dict(prices or {})
    unread = {h.asset_id for h in holdings} | {proposal.asset_id} - {None}
    unread -= consensus.keys()
    if unread:
        consensus |= consensus_for_assets(list(Asset.objects.filter(pk__in=unread)))
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
    cash = proposal.asset_id is None
    market = None if cash else consensus[proposal.asset_id]
    reserved, reserved_for_asset = _reserved_in_all_and_for_asset(proposal)
    taken_out = proposal.kind in (Proposal.Kind.SELL, Proposal.Kind.TRANSFER)
    facts = compliance.ComplianceFacts(
        kind=proposal.kind,
        cash=cash,
        quantity=proposal.quantity,
        account_quantity=(
            books.account_quantity(proposal.account_id, proposal.asset_id)
            if taken_out
            else Decimal(0)
        ),
        reserved_quantity=(
            reserved_quantity(proposal.account_id, proposal.asset_id, excluding=proposal)
            if taken_out
            else Decimal(0)
        ),
        accounts_named=proposal.account_id is not None,
        account_problems=tuple(operations.account_problems(proposal, now=timezone.now())),
        asset_symbol=proposal.asset.symbol if proposal.asset else "USD",
        notional_usd=proposal.notional_usd,
        whitelisted=(
            proposal.kind == Proposal.Kind.BUY
            and fund.whitelisted_assets.filter(pk=proposal.asset_id).exists()
        ),
        max_proposal_notional_usd=fund.max_proposal_notional_usd,
        max_asset_share=fund.max_asset_share,
        cash_usd=cash_usd,
        reserved_usd=reserved,
        reserved_asset_usd=reserved_for_asset,
        asset_value_usd=asset_value,
        holdings_value_usd=holdings_value,
        unpriced_symbols=tuple(unpriced),
        warn_at=Decimal(settings.ALEM_COMPLIANCE_WARN_AT),
        market_price_usd=market.price if market else None,
        price_flags=market.flags if market else (),
        limit_price_usd=proposal.limit_price_usd,
        final_approval=final_approval,
    )
    return facts, market.as_json() if market else None


# ---------------------------------------------------------------------------------------------
# The officials' pages: what waits for whom, and one proposal seen by one person
# ---------------------------------------------------------------------------------------------


def roles_by_fund(user) -> dict[int, set[str]]:
    """Every fund role ``user`` holds, directly or through a group, keyed by fund id (a fund
    they may only view, through ``view_fund``, maps to an empty set).

    One query whatever the number of funds (``roles.roles_on_fund`` costs two per fund).
    """
    return _roles_and_fund_names(user)[0]


def _roles_and_fund_names(user) -> tuple[dict[int, set[str]], dict[int, str]]:
    """``roles_by_fund`` and the name of each of those funds, from one query."""
    if not user.is_authenticated or not user.is_active:
        return {}, {}
    fund_type = ContentType.objects.get_for_model(Fund)
    wanted = {
        "content_type": fund_type,
        "permission__codename__in": [*FundRole.values, "view_fund"],
    }
    fund_name = Subquery(
        Fund.objects.filter(pk=Cast(OuterRef("object_pk"), BigIntegerField())).values("name")
    )
    direct = (
        UserObjectPermission.objects.filter(user=user, **wanted)
        .annotate(fund_name=fund_name)
        .values_list("object_pk", "permission__codename", "fund_name")
    )
    through_groups = (
        GroupObjectPermission.objects.filter(group__user=user, **wanted)
        .annotate(fund_name=fund_name)
        .values_list("object_pk", "permission__codename", "fund_name")
    )
    roles: dict[int, set[str]] = defaultdict(set)
    names: dict[int, str] = {}
    for fund_pk, codename, name in direct.union(through_groups, all=True):
        roles[int(fund_pk)].update({codename} & set(FundRole.values))
        names[int(fund_pk)] = name
    return dict(roles), names


def _request_roles_and_fund_names(request) -> tuple[dict[int, set[str]], dict[int, str]]:
    if not hasattr(request, "_alem_roles_and_fund_names"):
        request._alem_roles_and_fund_names = _roles_and_fund_names(request.user)
    return request._alem_roles_and_fund_names


def request_roles(request) -> dict[int, set[str]]:
    """``roles_by_fund`` of the request's user, read once per request (the page and its
    navigation share it)."""
    return _request_roles_and_fund_names(request)[0]


def request_fund_names(request) -> dict[int, str]:
    """The names of the funds in ``request_roles``, read by the same query."""
    return _request_roles_and_fund_names(request)[1]


def _funds_with(roles: dict[int, set[str]], wanted: set[str]) -> dict[int, set[str]]:
    return {fund_id: held & wanted for fund_id, held in roles.items() if held & wanted}


@dataclass(frozen=True)
class AwaitingDecision:
    """A proposal waiting at a stage whose role the user holds, with the decision's due date."""

    proposal: Proposal
    waiting_since: dt.datetime
    due_at: dt.datetime
    now: dt.datetime

    @property
    def overdue(self) -> bool:
        return self.now > self.due_at

    @property
    def age(self) -> str:
        """How long it has waited, in the largest unit ("3 days"), in the active language."""
        return timesince(self.waiting_since, self.now, depth=1)


def decision_due_days() -> int:
    return int(getattr(settings, "ALEM_DECISION_DUE_DAYS", 3))


def decisions_awaiting_proposals(user, *, roles: dict[int, set[str]] | None = None):
    """Proposals in review that wait for ``user``'s decision, longest waiting first, each
    annotated with ``waiting_since`` (a lazy queryset, for a page of it).

    Those ``permissions.decide_refusal`` allows, filtered in SQL
    (``permissions.awaiting_decision_q``). A proposal waits since its current stage opened
    (``Proposal.stage_opened_at``: its submission, the previous stage's completion or a
    reopening). ``roles``:
    ``roles_by_fund(user)`` when the caller has it already.
    """
    deciding = _funds_with(roles_by_fund(user) if roles is None else roles, set(DECIDING_ROLES))
    if not deciding:
        return Proposal.objects.none()
    return (
        Proposal.objects.filter(permissions.awaiting_decision_q(user, deciding))
        .annotate(waiting_since=Coalesce(F("stage_opened_at"), F("updated_at")))
        .select_related(
            "fund", "asset", "author", "current_stage", "account", "destination_account"
        )
        .order_by("waiting_since", "id")
    )


def awaiting_decisions(proposals, *, now: dt.datetime) -> list[AwaitingDecision]:
    """``proposals`` of ``decisions_awaiting_proposals`` with their due dates: a decision is
    due ``ALEM_DECISION_DUE_DAYS`` after its stage opened."""
    due = dt.timedelta(days=decision_due_days())
    return [
        AwaitingDecision(p, waiting_since=p.waiting_since, due_at=p.waiting_since + due, now=now)
        for p in proposals
    ]


def decisions_awaiting(user, *, now: dt.datetime | None = None) -> list[AwaitingDecision]:
    """Every proposal waiting for ``user``'s decision, longest waiting first, with its due date
    (the digest's list; the queue pages ``decisions_awaiting_proposals``). Three queries (two
    for the roles), whatever the number of proposals."""
    return awaiting_decisions(decisions_awaiting_proposals(user), now=now or timezone.now())


def fills_awaiting(
    user, *, now: dt.datetime | None = None, roles: dict[int, set[str]] | None = None
) -> QuerySet[Proposal]:
    """Approved proposals ``user`` may record fills for, the nearest approval expiry first.

    Those ``permissions.fill_refusal`` allows, filtered in SQL (``permissions.awaiting_fill_q``).
    Three queries (two for the roles, none when ``roles`` is given), whatever the number of
    proposals.
    """
    now = now or timezone.now()
    roles = roles_by_fund(user) if roles is None else roles
    treasury = _funds_with(roles, {FundRole.EXECUTE_TRADES})
    return (
        Proposal.objects.filter(permissions.awaiting_fill_q(user, treasury, now=now))
        .select_related("fund", "asset", "account", "destination_account")
        .order_by("approval_expires_at", "id")
    )


def proposals_authored(user) -> QuerySet[Proposal]:
    """``user``'s own proposals on funds they can still see, the latest changed first."""
    return (
        Proposal.objects.filter(author=user, fund__in=books.funds_for_user(user))
        .select_related("fund", "asset", "current_stage", "account", "destination_account")
        .order_by("-updated_at", "-id")
    )


@dataclass(frozen=True)
class FundSummary:
    fund: Fund
    valuation: books.FundValuation
    in_review: int
    can_propose: bool
    # Reconciliation breaks of its custody accounts waiting for an explanation.
    open_breaks: int = 0


def fund_summaries(user, *, roles: dict[int, set[str]] | None = None) -> list[FundSummary]:
    """Each fund ``user`` can see: its valuation now (NAV in USD and KZT, cash), how many of its
    proposals are in review, and whether ``user`` may propose there.

    Queries: the funds with their counts (and one for the roles unless ``roles`` is given), then
    the three of ``portfolio.selectors.fund_valuations`` and one for the open reconciliation
    breaks; none depend on the number of funds,
    assets or proposals.
    """
    roles = roles_by_fund(user) if roles is None else roles
    # A subquery on the (fund, state) index, not a join of every proposal of the fund.
    in_review = (
        Proposal.objects.filter(fund=OuterRef("pk"), state=ProposalState.IN_REVIEW)
        .values("fund")
        .annotate(count=Count("pk"))
        .values("count")
    )
    funds = list(
        Fund.objects.filter(pk__in=list(roles))
        .annotate(in_review_count=Coalesce(Subquery(in_review), 0))
        .order_by("name")
    )
    valuations = books.fund_valuations(funds)
    breaks = open_breaks_by_fund(fund.pk for fund in funds)
    return [
        FundSummary(
            fund=fund,
            valuation=valuations[fund.pk],
            in_review=fund.in_review_count,
            can_propose=FundRole.PROPOSE in roles[fund.pk],
            open_breaks=breaks.get(fund.pk, 0),
        )
        for fund in funds
    ]


@dataclass(frozen=True)
class StageReview:
    """One applicable stage of a proposal and the decisions taken there on the current version."""

    status: policies.StageStatus
    decisions: tuple[Decision, ...]


def proposal_stage_reviews(proposal: Proposal) -> list[StageReview]:
    """``proposal_stage_statuses`` with who decided at each stage and when (current version).

    Uses the prefetched ``proposal.decisions``, so it costs no query after
    ``proposal_list_for_user``.
    """
    by_stage: dict[int, list[Decision]] = defaultdict(list)
    for decision in proposal.decisions.all():
        if decision.proposal_version == proposal.version:
            by_stage[decision.stage.order].append(decision)
    return [
        StageReview(status, tuple(by_stage.get(status.order, ())))
        for status in proposal_stage_statuses(proposal)
    ]


def proposal_compliance_preview(
    proposal: Proposal, *, prices: dict[int, Consensus] | None = None
) -> compliance.ComplianceReport:
    """Pre-trade compliance of ``proposal`` judged now, as its next step would be judged: as the
    final approval when its current stage is the last applicable one. ``prices``: consensus
    prices the page has read already (``compliance_facts`` reads the others)."""
    final_approval = False
    if proposal.state == ProposalState.IN_REVIEW and proposal.policy is not None:
        applicable = policies.applicable_stages(
            proposal.policy.stages.all(), proposal.notional_usd, proposal.kind
        )
        final_approval = policies.is_final_stage(applicable, proposal.current_stage)
    facts, _price = compliance_facts(proposal, final_approval=final_approval, prices=prices)
    return compliance.evaluate(facts)
