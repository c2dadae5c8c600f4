"""Funds, assets, prices and the ledger a fund's holdings are derived from.

Portfolio knows nothing of proposals: it keeps the books and values them. Governance decides
what may happen and calls ``portfolio.services`` to book it.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from portfolio.constraints import check, unique
from portfolio.fields import AmountField, MoneyField, PriceField, RatioField

# Market data is the prices sub-package's; its models belong to this app (same tables).
from portfolio.prices.models import (  # noqa: F401
    FetchFailure,
    FxRate,
    MarketDataProvider,
    Price,
    PriceFetch,
)

# What the reconciliation observed and found; its models belong to this app too.
from portfolio.reconciliation.models import (  # noqa: F401
    BalanceObservation,
    ReconciliationBreak,
    ReconciliationRun,
)
from portfolio.text import reject_hidden_characters


class FundRole(models.TextChoices):
    """Roles held per fund, as django-guardian object permissions on ``Fund``.

    The values are permission codenames and part of the public contract.
    """

    PROPOSE = "propose", _("Fund manager: drafts, submits and withdraws proposals")
    REVIEW_RISK = "review_risk", _("Risk and compliance officer: first review stage")
    VOTE_COMMITTEE = "vote_committee", _("Investment committee member: committee stage")
    APPROVE_MINISTRY = "approve_ministry", _("Ministry official: sign-off of large proposals")
    EXECUTE_TRADES = "execute_trades", _("Treasury operator: records executions")
    AUDIT = "audit", _("Auditor: reads everything of the fund")
    MANAGE_POLICY = "manage_policy", _("Fund administrator: policies and mandate limits")


class Asset(models.Model):
    """A digital asset the fund may hold, with its identifiers at each market-data provider."""

    symbol = models.CharField(
        max_length=16,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9]{2,16}$", _("Use 2-16 capital letters or digits."))],
    )
    name = models.CharField(max_length=100, validators=[reject_hidden_characters])
    chain = models.CharField(max_length=100, blank=True)
    binance_symbol = models.CharField(
        max_length=32, blank=True, help_text=_("Binance spot pair quoted in USDT, e.g. BNBUSDT.")
    )
    coingecko_id = models.CharField(max_length=100, blank=True)
    peg_currency = models.CharField(
        max_length=3,
        blank=True,
        help_text=_("For a stablecoin valued at its peg through the official rate, e.g. KZT."),
    )

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return self.symbol


class Fund(models.Model):
    """A reserve fund with its mandate limits. Roles are object permissions on it."""

    # The limits pre-trade compliance checks every proposal against, in the order shown.
    MANDATE_LIMITS = (
        "max_asset_share",
        "max_proposal_notional_usd",
        "execution_window_days",
        "price_tolerance",
        "max_fee_share",
    )

    name = models.CharField(max_length=200, unique=True, validators=[reject_hidden_characters])
    slug = models.SlugField(max_length=50, unique=True)
    base_currency = models.CharField(max_length=3, default="USD", editable=False)
    reporting_currency = models.CharField(max_length=3, default="KZT")
    max_asset_share = RatioField(
        help_text=_("Largest share of the fund any one asset may reach after a trade (0-1).")
    )
    max_proposal_notional_usd = MoneyField(
        help_text=_("Largest notional a single proposal may ask for, in USD.")
    )
    execution_window_days = models.PositiveSmallIntegerField(
        default=5, help_text=_("Days an approval stays valid for execution.")
    )
    price_tolerance = RatioField(
        help_text=_("Largest deviation of an execution price from the consensus price (0-1).")
    )
    # 1% is ten times an exchange's usual spot fee, and room for an OTC desk's commission or a
    # chain's gas on a fill of any sensible size; a fee beyond it is a transfer, not a cost.
    max_fee_share = RatioField(
        default=Decimal("0.01"),
        help_text=_(
            "Largest fee of one execution as a share of its value, quantity × price (0-1; "
            "0 allows no fee)."
        ),
    )
    # Public disclosure (portfolio.disclosure): set only by publishing an approval policy
    # version that carries them (four eyes), never edited here.
    disclose_holdings = models.BooleanField(
        default=False,
        help_text=_(
            "Publish the fund's holdings, purchases, policy and decision statistics on its "
            "public pages."
        ),
    )
    disclosure_delay_days = models.PositiveSmallIntegerField(
        default=30, help_text=_("Nothing newer than this many days is ever public.")
    )
    disclose_deciders = models.BooleanField(
        default=False, help_text=_("Name who decided in the public decision statistics.")
    )
    # Set, like the mandate limits, only by publishing a policy version (four eyes).
    custody_cooling_off_hours = models.PositiveSmallIntegerField(
        default=48,
        help_text=_(
            "Hours a custody account added or changed waits, after a second administrator "
            "confirmed it, before any operation may use it."
        ),
    )
    cost_method = models.CharField(
        max_length=16,
        choices=[("average", _("Weighted average cost"))],
        default="average",
        editable=False,
        help_text=_(
            "How a sale's cost is measured for its realised profit or loss: the fund's average "
            "cost of the asset at the sale."
        ),
    )
    whitelisted_assets = models.ManyToManyField(
        Asset, blank=True, related_name="whitelisting_funds"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [(role.value, role.label) for role in FundRole]
        constraints = [
            check(
                Q(max_asset_share__gt=0, max_asset_share__lte=1), what="max_asset_share_in_range"
            ),
            check(Q(max_proposal_notional_usd__gt=0), what="max_proposal_notional_positive"),
            check(Q(execution_window_days__gte=1), what="execution_window_positive"),
            check(Q(price_tolerance__gt=0, price_tolerance__lt=1), what="price_tolerance_in_range"),
            # 0 is a mandate (fees only inside the price); a share of 1 lets the fee match the
            # value bought, which limits nothing.
            check(Q(max_fee_share__gte=0, max_fee_share__lt=1), what="max_fee_share_in_range"),
            check(Q(disclosure_delay_days__lte=3650), what="disclosure_delay_in_range"),
            check(Q(custody_cooling_off_hours__lte=720), what="cooling_off_in_range"),
        ]

    DISCLOSURE = ("disclose_holdings", "disclosure_delay_days", "disclose_deciders")
    # What a policy version carries and its publication copies onto the fund (four eyes).
    MANDATE = (*MANDATE_LIMITS, "custody_cooling_off_hours")

    def __str__(self) -> str:
        return self.name


class FundingSource(models.Model):
    """Where a fund's money comes from. Data, not code: each reserve names its own."""

    class Kind(models.TextChoices):
        BUDGET_ALLOCATION = "budget_allocation", _("Budget allocation")
        SEIZED_ASSETS = "seized_assets", _("Seized assets")
        MINING_REVENUE = "mining_revenue", _("State mining revenue")
        OTHER = "other", _("Other")

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="funding_sources")
    name = models.CharField(max_length=200, validators=[reject_hidden_characters])
    kind = models.CharField(max_length=32, choices=Kind.choices)

    class Meta:
        ordering = ["fund", "name"]
        constraints = [unique("fund", "name", what="unique_name_per_fund")]

    def __str__(self) -> str:
        return self.name


def same_chain(one: str, other: str) -> bool:
    """Whether two chain names (``Asset.chain``, ``CustodyAccount.chain``) name one chain."""
    return one.strip().casefold() == other.strip().casefold()


class CustodyAccount(models.Model):
    """Where a fund keeps coins: a cold multisig, an account at a qualified custodian or at an
    exchange, on one chain.

    Added and changed only through ``governance.services.custody`` by two fund administrators
    (a change request confirmed by a second one); usable by operations only from
    ``usable_from``, the confirmation plus the fund's cooling-off period. Removing one is
    immediate and final (``active`` false): no operation uses it again.
    """

    class Kind(models.TextChoices):
        COLD_MULTISIG = "cold_multisig", _("Cold multisig wallet")
        QUALIFIED_CUSTODIAN = "qualified_custodian", _("Qualified custodian")
        EXCHANGE = "exchange", _("Exchange account")

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="custody_accounts")
    name = models.CharField(max_length=200, validators=[reject_hidden_characters])
    kind = models.CharField(max_length=32, choices=Kind.choices)
    chain = models.CharField(max_length=100, help_text=_("As the assets name it, e.g. Bitcoin."))
    address = models.CharField(
        max_length=200,
        blank=True,
        validators=[reject_hidden_characters],
        help_text=_(
            "The public address, read by the on-chain reconciliation; empty for an account "
            "known only by its statements (an exchange or custodian account)."
        ),
    )
    account_reference = models.CharField(
        max_length=200,
        blank=True,
        validators=[reject_hidden_characters],
        help_text=_("The custodian's or exchange's account number, when there is no address."),
    )
    active = models.BooleanField(default=True)
    usable_from = models.DateTimeField(help_text=_("No operation uses it before this moment."))
    created_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["fund", "name"]
        constraints = [
            unique("fund", "name", what="unique_name_per_fund"),
            # An address is one active account's, of one fund.
            unique(
                "chain",
                "address",
                what="one_account_per_address",
                condition=~Q(address="") & Q(active=True),
            ),
            check(~Q(address="") | ~Q(account_reference=""), what="address_or_reference"),
            check(
                Q(active=True, removed_at__isnull=True) | Q(active=False, removed_at__isnull=False),
                what="removed_iff_inactive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.chain})"

    def usable(self, now) -> bool:
        """Whether an operation may use the account at ``now``."""
        return self.active and self.usable_from <= now


class LedgerEntry(models.Model):
    """One immutable change of a fund's cash (``asset`` empty, in USD) or of one holding.

    Positions and cash are sums over these rows, kept running in ``Position``; nothing updates
    or deletes them.
    """

    class Kind(models.TextChoices):
        CONTRIBUTION = "contribution", _("Contribution of cash or assets")
        BUY = "buy", _("Purchase")
        SELL = "sell", _("Sale")
        FEE = "fee", _("Fee")
        TRANSFER = "transfer", _("Transfer between custody accounts")

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="ledger_entries")
    account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_entries",
        help_text=_("The custody account the coins are in; empty for cash."),
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    asset = models.ForeignKey(
        Asset,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_entries",
        help_text=_("Empty for US dollar cash."),
    )
    quantity = AmountField(help_text=_("Signed change: asset units, or USD for cash."))
    value_usd = AmountField(help_text=_("Signed USD value at booking (cost for holdings)."))
    funding_source = models.ForeignKey(
        FundingSource, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reference = models.CharField(
        max_length=200, blank=True, help_text=_("What booked it, unique per fund when set.")
    )
    memo = models.CharField(max_length=500, blank=True)
    booked_at = models.DateTimeField()
    booked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["booked_at", "id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["fund", "asset"])]
        constraints = [
            check(~Q(quantity=0), what="quantity_nonzero"),
            check(
                Q(asset__isnull=False) | Q(value_usd=F("quantity")), what="cash_value_is_quantity"
            ),
            check(
                ~Q(kind="contribution") | Q(quantity__gt=0, value_usd__gte=0),
                what="contribution_positive",
            ),
            unique("fund", "reference", what="unique_reference", condition=~Q(reference="")),
            check(Q(asset__isnull=False) | Q(account__isnull=True), what="cash_has_no_account"),
            check(~Q(kind="transfer") | Q(account__isnull=False), what="transfer_has_account"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.quantity} {self.asset or 'USD'}"


class Position(models.Model):
    """A fund's running balance of one asset, or of US dollar cash (``asset`` empty): the sums of
    its ledger entries.

    Kept by the database itself: a trigger on ``portfolio_ledgerentry`` adds each entry booked
    to its position in the same statement (migration ``portfolio 0007``), and ledger entries are
    only ever inserted, so a position always equals the sums of its entries, however the entry
    was written. Reading the books then costs one row per asset, not one per entry ever booked.
    Never written by the application.
    """

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="positions")
    asset = models.ForeignKey(
        Asset, null=True, blank=True, on_delete=models.PROTECT, related_name="positions"
    )
    quantity = AmountField(help_text=_("Sum of the entries' quantities."))
    cost_usd = AmountField(help_text=_("Sum of the entries' USD values."))
    entries = models.PositiveIntegerField(help_text=_("How many ledger entries it sums."))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["fund", "asset"],
                nulls_distinct=False,
                name="portfolio_position_one_per_fund_and_asset",
            )
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.asset or 'USD'}"


class AccountPosition(models.Model):
    """A custody account's running balance of one asset: the sums of the ledger entries booked
    to the account.

    Kept by the same trigger as ``Position`` (migration ``portfolio 0009``), never written by the
    application. The database refuses a negative balance, so no sale or transfer can take out
    more than the account holds, whatever races it.
    """

    account = models.ForeignKey(CustodyAccount, on_delete=models.PROTECT, related_name="positions")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="account_positions")
    quantity = AmountField(help_text=_("Sum of the entries' quantities."))
    cost_usd = AmountField(help_text=_("Sum of the entries' USD values."))
    entries = models.PositiveIntegerField(help_text=_("How many ledger entries it sums."))

    class Meta:
        constraints = [
            unique("account", "asset", what="one_per_account_and_asset"),
            check(Q(quantity__gte=0), what="never_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.asset} in {self.account}"


class NavSnapshot(models.Model):
    """A fund's net asset value at the end of one Almaty day (or so far today), kept for history.

    Derived data: ``portfolio.services.nav_snapshot_take`` recomputes it from the ledger and the
    prices, so retaking a day after a price backfill replaces it.
    """

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="nav_snapshots")
    date = models.DateField()
    valued_at = models.DateTimeField(help_text=_("The moment the holdings were valued."))
    cash_usd = AmountField()
    holdings_value_usd = AmountField(null=True, blank=True)
    nav_usd = AmountField(null=True, blank=True, help_text=_("Empty when a holding has no price."))
    usd_kzt_rate = PriceField(null=True, blank=True)
    usd_kzt_rate_date = models.DateField(null=True, blank=True)
    nav_kzt = AmountField(null=True, blank=True)
    positions = models.JSONField(default=list)
    taken_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["fund", "date"]
        constraints = [unique("fund", "date", what="one_per_fund_and_day")]

    def __str__(self) -> str:
        return f"{self.fund} NAV on {self.date}: {self.nav_usd} USD"


class PublicDisclosure(models.Model):
    """What a fund's public pages show, built ahead of any visitor (``portfolio.disclosure``):
    one JSON document per fund that discloses, nothing in it newer than ``cutoff``."""

    fund = models.OneToOneField(Fund, on_delete=models.CASCADE, related_name="disclosure")
    built_at = models.DateTimeField()
    cutoff = models.DateTimeField(help_text=_("Nothing after this moment is in the document."))
    document = models.JSONField()

    def __str__(self) -> str:
        return f"Disclosure of {self.fund} up to {self.cutoff:%Y-%m-%d %H:%M}"
