"""Reads of the reconciliation, scoped by the caller: who may see it, each account's ledger
balance beside its latest observed balance, the breaks, and the latest run's gaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils.translation import gettext_lazy as _

from governance.roles import has_role
from portfolio.models import (
    AccountPosition,
    BalanceObservation,
    CustodyAccount,
    Fund,
    FundRole,
    ReconciliationBreak,
    ReconciliationRun,
)
from portfolio.reconciliation import rules
from portfolio.selectors import funds_for_user

# Who sees a fund's reconciliation: its auditors and administrators, and its treasury operators,
# who upload the statements of accounts without an address.
VIEWING_ROLES = {FundRole.AUDIT, FundRole.MANAGE_POLICY, FundRole.EXECUTE_TRADES}


class Status:
    """Where one account's balance of one asset stands."""

    MATCHED = "matched"  # the latest observation is within dust of the ledger
    OPEN_BREAK = "open_break"  # a break waits for its explanation
    EXPLAINED = "explained"  # it differs, by an amount already explained
    NOT_OBSERVED = "not_observed"  # nothing read or uploaded yet


STATUS_WORDS = {
    Status.MATCHED: _("Matches the ledger"),
    Status.OPEN_BREAK: _("Open break"),
    Status.EXPLAINED: _("Differs by an explained amount"),
    Status.NOT_OBSERVED: _("Not observed yet"),
}


# The site's badge colours (alem/static/alem/app.css) per status.
STATUS_BADGES = {
    Status.MATCHED: "ok",
    Status.OPEN_BREAK: "bad",
    Status.EXPLAINED: "warn",
    Status.NOT_OBSERVED: "neutral",
}


@dataclass(frozen=True)
class BalanceRow:
    account: CustodyAccount
    asset_symbol: str
    ledger_quantity: Decimal
    observation: BalanceObservation | None
    status: str

    @property
    def status_words(self) -> str:
        return str(STATUS_WORDS[self.status])

    @property
    def badge(self) -> str:
        return STATUS_BADGES[self.status]


@dataclass
class FundReconciliation:
    fund: Fund
    rows: list[BalanceRow] = field(default_factory=list)
    accounts: list[CustodyAccount] = field(default_factory=list)
    open_breaks: list[ReconciliationBreak] = field(default_factory=list)
    explained_breaks: list[ReconciliationBreak] = field(default_factory=list)
    last_run: ReconciliationRun | None = None
    skipped: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


def reconciliation_funds_for_user(user) -> QuerySet[Fund]:
    """Funds whose reconciliation ``user`` sees."""
    return funds_for_user(user, roles=list(VIEWING_ROLES))


def may_explain(user, fund: Fund) -> bool:
    """Whether ``user`` may explain a break at all (an auditor, or an administrator linking a
    proposal); ``services.break_explain_refusal`` decides each attempt."""
    return has_role(user, fund, FundRole.AUDIT) or has_role(user, fund, FundRole.MANAGE_POLICY)


def may_comment(user, fund: Fund) -> bool:
    """Whether ``user`` may explain a break with a comment alone (auditors)."""
    return has_role(user, fund, FundRole.AUDIT)


def may_upload_statement(user, fund: Fund) -> bool:
    return has_role(user, fund, FundRole.EXECUTE_TRADES)


def fund_breaks(fund: Fund) -> QuerySet[ReconciliationBreak]:
    return ReconciliationBreak.objects.filter(account__fund=fund).select_related(
        "account", "asset", "observation", "explained_by", "proposal"
    )


def fund_reconciliation(fund: Fund, *, explained_limit: int = 50) -> FundReconciliation:
    """The fund's custody accounts (active ones, and removed ones with an open break), each
    asset's ledger balance beside its latest observation, the open breaks, the latest explained
    ones and what the latest run skipped or failed to read for this fund."""
    result = FundReconciliation(fund=fund)
    breaks = fund_breaks(fund)
    result.open_breaks = list(breaks.filter(state=ReconciliationBreak.State.OPEN))
    result.explained_breaks = list(
        breaks.filter(state=ReconciliationBreak.State.EXPLAINED).order_by("-explained_at")[
            :explained_limit
        ]
    )
    with_open_break = {b.account_id for b in result.open_breaks}
    accounts = [
        account
        for account in CustodyAccount.objects.filter(fund=fund).order_by("name")
        if account.active or account.pk in with_open_break
    ]
    result.accounts = accounts
    positions = {
        (p.account_id, p.asset.symbol): p.quantity
        for p in AccountPosition.objects.filter(account__in=accounts).select_related("asset")
    }
    latest = {}
    observations = (
        BalanceObservation.objects.filter(account__in=accounts)
        .select_related("asset")
        .order_by("account_id", "asset_id", "-id")
        .distinct("account_id", "asset_id")
    )
    for observation in observations:
        latest[(observation.account_id, observation.asset.symbol)] = observation
    open_pairs = {(b.account_id, b.asset.symbol) for b in result.open_breaks}
    for account in accounts:
        symbols = sorted({s for (a, s) in [*positions, *latest] if a == account.pk})
        for symbol in symbols:
            observation = latest.get((account.pk, symbol))
            result.rows.append(
                BalanceRow(
                    account=account,
                    asset_symbol=symbol,
                    ledger_quantity=positions.get((account.pk, symbol), Decimal(0)),
                    observation=observation,
                    status=_status(
                        symbol,
                        observation.difference if observation else None,
                        broken=(account.pk, symbol) in open_pairs,
                    ),
                )
            )
    result.last_run = ReconciliationRun.objects.first()
    if result.last_run is not None:
        ids = {account.pk for account in accounts}
        result.skipped = [s for s in result.last_run.skipped if s.get("account") in ids]
        result.failures = [f for f in result.last_run.failures if f.get("account") in ids]
    return result


def _status(symbol: str, difference: Decimal | None, *, broken: bool) -> str:
    """One asset's status in one account: an open break first, then whether its latest
    observation (``difference`` from the ledger; None when there is none) is within dust."""
    if broken:
        return Status.OPEN_BREAK
    if difference is None:
        return Status.NOT_OBSERVED
    if abs(difference) <= rules.dust_for(symbol):
        return Status.MATCHED
    return Status.EXPLAINED


def account_statuses(account_ids) -> dict[int, AccountStatus]:
    """One status per custody account for the portfolio and proposal pages: an open break on
    any of its assets first, then an explained difference, then a match; ``not_observed`` for
    an account nothing was read or uploaded for. One query, whatever the number of accounts:
    each asset's latest observation, with whether a break on it is open (a break is opened by
    an observation, so every open one has its asset's observation here)."""
    account_ids = list(account_ids)
    open_break = ReconciliationBreak.objects.filter(
        account_id=OuterRef("account_id"),
        asset_id=OuterRef("asset_id"),
        state=ReconciliationBreak.State.OPEN,
    )
    latest = (
        BalanceObservation.objects.filter(account_id__in=account_ids)
        .order_by("account_id", "asset_id", "-id")
        .distinct("account_id", "asset_id")
        .annotate(broken=Exists(open_break))
        .values_list("account_id", "asset__symbol", "difference", "broken")
    )
    statuses = dict.fromkeys(account_ids, Status.NOT_OBSERVED)
    severity = [Status.NOT_OBSERVED, Status.MATCHED, Status.EXPLAINED, Status.OPEN_BREAK]
    for account_id, symbol, difference, broken in latest:
        found = _status(symbol, difference, broken=broken)
        if severity.index(found) > severity.index(statuses[account_id]):
            statuses[account_id] = found
    return {account_id: AccountStatus(status) for account_id, status in statuses.items()}


def open_breaks_by_fund(fund_ids) -> dict[int, int]:
    """How many breaks wait for an explanation in each fund (one query), for the queue."""
    counts = (
        ReconciliationBreak.objects.filter(
            account__fund_id__in=list(fund_ids), state=ReconciliationBreak.State.OPEN
        )
        .values("account__fund_id")
        .annotate(count=Count("pk"))
    )
    return {row["account__fund_id"]: row["count"] for row in counts}


@dataclass(frozen=True)
class AccountStatus:
    """An account's reconciliation status, as the pages show it."""

    status: str

    @property
    def words(self) -> str:
        return str(STATUS_WORDS[self.status])

    @property
    def badge(self) -> str:
        return STATUS_BADGES[self.status]
