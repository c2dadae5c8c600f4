"""Pre-trade compliance (rule 8): pure checks over plain values, with pass / warn / block.

``governance.selectors.compliance_facts`` gathers the facts from the books; this module only
judges them, so every limit can be tested without a database.
"""

from dataclasses import asdict, dataclass, field
from decimal import Decimal

PASS, WARN, BLOCK = "pass", "warn", "block"
_SEVERITY = {PASS: 0, WARN: 1, BLOCK: 2}


@dataclass(frozen=True)
class ComplianceFacts:
    """What the checks look at, in USD, for one proposed buy."""

    asset_symbol: str
    notional_usd: Decimal
    whitelisted: bool
    max_proposal_notional_usd: Decimal
    max_asset_share: Decimal
    cash_usd: Decimal
    # Notional still reserved by other approved, not yet executed proposals of the fund.
    reserved_usd: Decimal
    # Market value of the fund's current holding of the asset, and of all holdings.
    asset_value_usd: Decimal
    holdings_value_usd: Decimal
    # Holdings that could not be valued because no price is stored for them.
    unpriced_symbols: tuple[str, ...] = ()
    # Of ``reserved_usd``, what approved proposals will still spend on this same asset.
    reserved_asset_usd: Decimal = Decimal("0")
    warn_at: Decimal = Decimal("0.90")
    # The asset's consensus price and its flags (stale, divergent, single_source, missing).
    market_price_usd: Decimal | None = None
    price_flags: tuple[str, ...] = ()
    limit_price_usd: Decimal | None = None
    # At the final approval a flagged price blocks; before it, it warns.
    final_approval: bool = False
    # The operation (rule 15) and, for a sale or transfer, what its account holds of the asset
    # and what other approved sales and transfers from it will still take out.
    kind: str = "buy"
    quantity: Decimal | None = None
    account_quantity: Decimal = Decimal("0")
    reserved_quantity: Decimal = Decimal("0")
    # Whether it names custody accounts, and why one cannot be used now (removed, cooling off).
    accounts_named: bool = False
    account_problems: tuple[str, ...] = ()
    # An intake of US dollars has no market price to judge.
    cash: bool = False


@dataclass(frozen=True)
class Check:
    rule: str
    outcome: str
    message: str
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ComplianceReport:
    outcome: str
    checks: tuple[Check, ...]

    @property
    def blocking(self) -> list[Check]:
        return [check for check in self.checks if check.outcome == BLOCK]

    def as_json(self) -> dict:
        """The report as JSON-ready values, decimals as strings."""
        return {
            "outcome": self.outcome,
            "checks": [
                {**asdict(check), "values": {k: str(v) for k, v in check.values.items()}}
                for check in self.checks
            ],
        }


def _near(value: Decimal, limit: Decimal, warn_at: Decimal) -> bool:
    return limit > 0 and value >= limit * warn_at


def check_whitelist(facts: ComplianceFacts) -> Check:
    if facts.whitelisted:
        return Check("whitelist", PASS, f"{facts.asset_symbol} is on the fund's whitelist.")
    return Check("whitelist", BLOCK, f"{facts.asset_symbol} is not on the fund's whitelist.")


def check_single_proposal_limit(facts: ComplianceFacts) -> Check:
    values = {"notional_usd": facts.notional_usd, "limit_usd": facts.max_proposal_notional_usd}
    if facts.notional_usd > facts.max_proposal_notional_usd:
        return Check(
            "single_proposal_limit",
            BLOCK,
            f"Notional USD {facts.notional_usd} exceeds the single-proposal limit "
            f"of USD {facts.max_proposal_notional_usd}.",
            values,
        )
    if _near(facts.notional_usd, facts.max_proposal_notional_usd, facts.warn_at):
        return Check(
            "single_proposal_limit", WARN, "Notional is close to the single-proposal limit.", values
        )
    return Check("single_proposal_limit", PASS, "Notional is within the limit.", values)


def check_cash(facts: ComplianceFacts) -> Check:
    available = facts.cash_usd - facts.reserved_usd
    values = {
        "cash_usd": facts.cash_usd,
        "reserved_usd": facts.reserved_usd,
        "available_usd": available,
        "notional_usd": facts.notional_usd,
    }
    if facts.notional_usd > available:
        return Check(
            "cash",
            BLOCK,
            f"Not enough cash: USD {available} available after USD {facts.reserved_usd} reserved "
            f"for approved proposals, USD {facts.notional_usd} needed.",
            values,
        )
    if _near(facts.notional_usd, available, facts.warn_at):
        return Check("cash", WARN, "The proposal would use almost all available cash.", values)
    return Check("cash", PASS, "Enough cash is available.", values)


def post_trade_share(facts: ComplianceFacts) -> Decimal | None:
    """The asset's share of the fund after the buy; a buy turns cash into the asset.

    Returns None when the fund is worth nothing, so no share can be computed.
    """
    total = facts.cash_usd + facts.holdings_value_usd
    if total <= 0:
        return None
    return (facts.asset_value_usd + facts.reserved_asset_usd + facts.notional_usd) / total


def check_concentration(facts: ComplianceFacts) -> Check:
    if facts.unpriced_symbols:
        missing = ", ".join(facts.unpriced_symbols)
        return Check(
            "concentration",
            BLOCK,
            f"Holdings cannot be valued: no stored price for {missing}.",
            {"unpriced": missing},
        )
    share = post_trade_share(facts)
    if share is None:
        return Check("concentration", BLOCK, "The fund has no value to measure a share against.")
    values = {
        "post_trade_share": share.quantize(Decimal("0.000001")),
        "limit": facts.max_asset_share,
    }
    if share > facts.max_asset_share:
        return Check(
            "concentration",
            BLOCK,
            f"After the trade {facts.asset_symbol} would be {share:.2%} of the fund, above the "
            f"limit of {facts.max_asset_share:.2%}.",
            values,
        )
    if _near(share, facts.max_asset_share, facts.warn_at):
        return Check(
            "concentration",
            WARN,
            f"After the trade {facts.asset_symbol} would be {share:.2%} of the fund, close to the "
            f"limit of {facts.max_asset_share:.2%}.",
            values,
        )
    return Check(
        "concentration", PASS, f"Post-trade share of {facts.asset_symbol}: {share:.2%}.", values
    )


def check_market_price(facts: ComplianceFacts) -> Check:
    """A flagged or missing consensus price cannot back an approval (it warns before one)."""
    if facts.cash:
        return Check("market_price", PASS, "US dollars are valued at par.")
    if facts.market_price_usd is not None and not facts.price_flags:
        return Check(
            "market_price",
            PASS,
            f"{facts.asset_symbol} has a usable consensus price of USD "
            f"{facts.market_price_usd.normalize():f}.",
            {"price_usd": facts.market_price_usd},
        )
    flags = ", ".join(facts.price_flags) or "missing"
    outcome = BLOCK if facts.final_approval else WARN
    return Check(
        "market_price",
        outcome,
        f"The consensus price of {facts.asset_symbol} cannot back an approval ({flags}).",
        {"flags": flags},
    )


def check_limit_price(facts: ComplianceFacts) -> Check:
    """A limit below the market means the treasury may be unable to fill the order."""
    if facts.market_price_usd is None or facts.limit_price_usd is None:
        return Check("limit_price", PASS, "No market price to compare the limit price with.")
    values = {"limit_price_usd": facts.limit_price_usd, "market_price_usd": facts.market_price_usd}
    if facts.limit_price_usd < facts.market_price_usd:
        return Check(
            "limit_price",
            WARN,
            f"The limit price USD {facts.limit_price_usd} is below the consensus price "
            f"USD {facts.market_price_usd}: the order may not fill.",
            values,
        )
    return Check("limit_price", PASS, "The limit price is at or above the market.", values)


def check_holdings(facts: ComplianceFacts) -> Check:
    """A sale or transfer takes out no more than its account holds, less what other approved
    sales and transfers from the account will still take."""
    available = facts.account_quantity - facts.reserved_quantity
    values = {
        "account_quantity": facts.account_quantity,
        "reserved_quantity": facts.reserved_quantity,
        "available_quantity": available,
        "quantity": facts.quantity,
    }
    if facts.quantity > available:
        return Check(
            "holdings",
            BLOCK,
            f"Not enough {facts.asset_symbol} in the account: {available.normalize():f} "
            f"available after {facts.reserved_quantity.normalize():f} reserved for approved "
            f"operations, {facts.quantity.normalize():f} needed.",
            values,
        )
    return Check("holdings", PASS, f"The account holds enough {facts.asset_symbol}.", values)


def check_accounts(facts: ComplianceFacts) -> Check | None:
    """The custody accounts an operation names are usable now: not removed, cooled off (no
    check when it names none: a buy of old, an intake of US dollars)."""
    if not facts.accounts_named:
        return None
    if facts.account_problems:
        return Check("custody_accounts", BLOCK, " ".join(facts.account_problems))
    return Check("custody_accounts", PASS, "The custody accounts named can be used.")


def check_lowest_price(facts: ComplianceFacts) -> Check:
    """A sale's lowest price above the market means the treasury may be unable to sell."""
    if facts.market_price_usd is None or facts.limit_price_usd is None:
        return Check("lowest_price", PASS, "No market price to compare the lowest price with.")
    values = {"limit_price_usd": facts.limit_price_usd, "market_price_usd": facts.market_price_usd}
    if facts.limit_price_usd > facts.market_price_usd:
        return Check(
            "lowest_price",
            WARN,
            f"The lowest price USD {facts.limit_price_usd} is above the consensus price "
            f"USD {facts.market_price_usd}: the sale may not fill.",
            values,
        )
    return Check("lowest_price", PASS, "The lowest price is at or below the market.", values)


# The checks each kind of operation runs (rule 8 for each kind, rule 15). A sale is not held to
# the whitelist (a fund must be able to sell what it was handed), an intake neither (seized
# coins are taken as they come, then sold or kept by a later proposal); a transfer moves no
# value out of the fund, so only its accounts and holdings are judged.
CHECKS_BY_KIND = {
    "buy": (
        check_whitelist,
        check_single_proposal_limit,
        check_cash,
        check_concentration,
        check_market_price,
        check_limit_price,
        check_accounts,
    ),
    "sell": (
        check_single_proposal_limit,
        check_holdings,
        check_market_price,
        check_lowest_price,
        check_accounts,
    ),
    "transfer": (check_holdings, check_accounts),
    "intake": (check_market_price, check_accounts),
}


def evaluate(facts: ComplianceFacts) -> ComplianceReport:
    """Run every pre-trade check of the operation's kind; the report's outcome is the most
    severe of theirs."""
    checks = tuple(
        found for check in CHECKS_BY_KIND[facts.kind] if (found := check(facts)) is not None
    )
    outcome = max((check.outcome for check in checks), key=_SEVERITY.__getitem__)
    return ComplianceReport(outcome, checks)
