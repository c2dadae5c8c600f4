"""Back office for the books: funds, assets, funding sources, the ledger and NAV snapshots
(market data has its own, ``portfolio.prices.admin``).

The ledger that valuation and compliance rest on is read-only here: ledger entries are booked
by services, NAV snapshots by ``nav_snapshot_take``. The fund page shows the fund's positions and
NAV now (``portfolio.selectors.fund_valuation``). Custody accounts are read-only too: two fund
administrators add or change them through ``governance.services.custody``. Governance extends
the fund page with role grants and custody accounts (``governance.admin.FundAdmin``), keeping
this app free of governance imports.
"""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from portfolio.admin_mixins import CreateOnlyFieldsMixin, ReadOnlyAdminMixin, exact, exact_column
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, LedgerEntry, NavSnapshot

# Importing market data's admin registers its read-only pages (prices, rates, fetches); the
# names stay reachable here because governance extends ``PriceAdmin``.
from portfolio.prices.admin import FxRateAdmin, PriceAdmin  # noqa: F401

# The reconciliation's read-only pages (observations, breaks, runs).
from portfolio.reconciliation import admin as reconciliation_admin  # noqa: F401
from portfolio.selectors import fund_valuation

# The mandate: what pre-trade compliance checks every proposal against, and how long a custody
# account cools off. Set when a fund is created; afterwards only publishing an approval policy
# version that carries it changes it (two fund administrators, rule 14), so it is read-only here.
MANDATE_FIELDS = (*Fund.MANDATE, "whitelisted_assets")


@admin.register(Fund)
class FundAdmin(CreateOnlyFieldsMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "reporting_currency",
        *Fund.MANDATE_LIMITS,
        "disclose_holdings",
        "created_at",
    )
    list_filter = ("disclose_holdings", "reporting_currency")
    search_fields = ("name", "slug")
    ordering = ("name",)
    filter_horizontal = ("whitelisted_assets",)
    # Disclosure is never set here, not even on creation: a fund starts undisclosed, and only a
    # published policy version (two administrators) changes it.
    readonly_fields = ("base_currency", "created_at", "valuation", *Fund.DISCLOSURE)
    create_only_fields = ("slug", *MANDATE_FIELDS)
    fieldsets = (
        (None, {"fields": ("name", "slug", "base_currency", "reporting_currency")}),
        (
            _("Mandate"),
            {
                "fields": MANDATE_FIELDS,
                "description": _(
                    "Set when the fund is created; changed by publishing a policy version "
                    "(drafted by one fund administrator, published by another)."
                ),
            },
        ),
        (
            _("Disclosure"),
            {
                "fields": Fund.DISCLOSURE,
                "description": _(
                    "Changed only by publishing an approval policy version that carries them "
                    "(two fund administrators)."
                ),
            },
        ),
        (_("Record"), {"fields": ("created_at",)}),
    )

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None else {}

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (
            (
                _("Positions"),
                {
                    "fields": ("valuation",),
                    "description": _(
                        "Derived from the ledger and valued at the consensus price now. "
                        "Read-only: the books change through contributions and executions."
                    ),
                },
            ),
            *fieldsets,
        )

    @admin.display(description=_("valuation now"))
    def valuation(self, fund: Fund) -> str:
        if fund.pk is None:
            return "-"
        current = fund_valuation(fund)
        valuation, rate = current.valuation, current.rate
        positions = [
            {
                "symbol": p.symbol,
                "quantity": exact(p.quantity),
                "average_cost_usd": exact(p.average_cost_usd),
                "cost_basis_usd": exact(p.cost_basis_usd),
                "price_usd": exact(p.price_usd),
                "flags": ", ".join(current.consensus[p.asset_id].flags),
                "sources": ", ".join(current.consensus[p.asset_id].sources),
                "market_value_usd": exact(p.market_value_usd),
                "unrealized_pnl_usd": exact(p.unrealized_pnl_usd),
                "share": "-" if p.share is None else f"{p.share:.2%}",
            }
            for p in valuation.positions
        ]
        return render_to_string(
            "admin/portfolio/fund/_positions.html",
            {
                "valued_at": current.at,
                "cash_usd": exact(valuation.cash_usd),
                "nav_usd": exact(valuation.nav_usd),
                "nav_kzt": exact(current.nav_kzt),
                "rate": rate,
                "rate_value": exact(rate.rate) if rate else "-",
                "unpriced": ", ".join(valuation.unpriced),
                "positions": positions,
                "nav_history_url": reverse("admin:portfolio_navsnapshot_changelist")
                + f"?fund__id__exact={fund.pk}",
            },
        )

    def has_delete_permission(self, request, obj=None):
        # A fund's books and audit trail are public record.
        return False

    def fund_tools(self, request, fund: Fund) -> list[tuple[str, str]]:
        """Links (label, url) shown on the fund's page; governance adds its own."""
        return []

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        fund = self.get_object(request, unquote(object_id))
        if fund is not None:
            extra_context["fund_tools"] = self.fund_tools(request, fund)
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(Asset)
class AssetAdmin(CreateOnlyFieldsMixin, admin.ModelAdmin):
    list_display = ("symbol", "name", "chain", "binance_symbol", "coingecko_id", "peg_currency")
    list_filter = ("chain", "peg_currency")
    search_fields = ("symbol", "name", "binance_symbol", "coingecko_id")
    ordering = ("symbol",)
    # Audit payloads and proposals name assets by symbol, so a symbol is never reused.
    create_only_fields = ("symbol",)


@admin.register(FundingSource)
class FundingSourceAdmin(CreateOnlyFieldsMixin, admin.ModelAdmin):
    list_display = ("name", "fund", "kind")
    list_filter = ("kind", "fund")
    search_fields = ("name", "fund__name")
    ordering = ("fund__name", "name")
    list_select_related = ("fund",)
    create_only_fields = ("fund",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "booked_at",
        "fund",
        "kind",
        "holding",
        "quantity",
        "value_usd",
        "funding_source",
        "reference",
        "booked_by",
    )
    list_filter = ("kind", "fund", "asset")
    search_fields = ("reference", "memo", "fund__name", "asset__symbol")
    date_hierarchy = "booked_at"
    ordering = ("-booked_at", "-id")
    list_select_related = ("fund", "asset", "funding_source", "booked_by")

    @admin.display(description=_("asset"), ordering="asset__symbol")
    def holding(self, entry: LedgerEntry) -> str:
        return entry.asset.symbol if entry.asset_id else "USD cash"


@admin.register(NavSnapshot)
class NavSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """End-of-day NAV history, taken by the scheduled task or ``manage.py take_nav_snapshots``."""

    list_display = (
        "date",
        "fund",
        "nav_usd_exact",
        "nav_kzt_exact",
        "usd_kzt_rate_exact",
        "usd_kzt_rate_date",
        "cash_usd_exact",
        "holdings_value_usd_exact",
        "valued_at",
        "taken_at",
    )
    list_filter = ("fund",)
    date_hierarchy = "date"
    ordering = ("-date", "fund__name")
    list_select_related = ("fund",)
    fields = (
        "fund",
        "date",
        "valued_at",
        "cash_usd_exact",
        "holdings_value_usd_exact",
        "nav_usd_exact",
        "usd_kzt_rate_exact",
        "usd_kzt_rate_date",
        "nav_kzt_exact",
        "positions_display",
        "taken_at",
    )
    readonly_fields = fields

    nav_usd_exact = exact_column("nav_usd", _("NAV (USD)"), ordering="nav_usd")
    nav_kzt_exact = exact_column("nav_kzt", _("NAV (KZT)"), ordering="nav_kzt")
    usd_kzt_rate_exact = exact_column("usd_kzt_rate", _("USD/KZT rate"))
    cash_usd_exact = exact_column("cash_usd", _("cash (USD)"))
    holdings_value_usd_exact = exact_column("holdings_value_usd", _("holdings (USD)"))

    @admin.display(description=_("positions"))
    def positions_display(self, snapshot: NavSnapshot) -> str:
        if not snapshot.positions:
            return _("No holdings.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    p["asset"],
                    exact(p["quantity"]),
                    exact(p["cost_basis_usd"]),
                    exact(p["price_usd"]),
                    exact(p["market_value_usd"]),
                    ", ".join(p.get("price_flags", [])) or "-",
                )
                for p in snapshot.positions
            ),
        )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "<th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("asset"),
            _("quantity"),
            _("cost basis (USD)"),
            _("price (USD)"),
            _("market value (USD)"),
            _("price flags"),
            rows,
        )


@admin.register(CustodyAccount)
class CustodyAccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Where each fund keeps its coins. Read-only: a fund's "Custody accounts" page asks for
    additions and changes (two fund administrators, then the cooling-off) and removes accounts."""

    list_display = ("name", "fund", "kind", "chain", "address", "account_reference", "active")
    list_display += ("usable_from", "created_at", "removed_at")
    list_filter = ("active", "kind", "fund")
    search_fields = ("name", "address", "account_reference", "fund__name")
    ordering = ("fund__name", "-active", "name")
    list_select_related = ("fund",)
