"""Back office for the books: funds, assets, funding sources, prices, FX rates and the ledger.

The ledger and the market data that valuation and compliance rest on are read-only here:
ledger entries are booked by services (contributions through
``governance.services.contribution_record``), prices and rates come from the import and fetch
tasks. Governance extends the fund page with role grants and contributions
(``governance.admin.FundAdmin``), keeping this app free of governance imports.
"""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.utils.translation import gettext_lazy as _

from portfolio.models import Asset, Fund, FundingSource, FxRate, LedgerEntry, Price

# Market-data fetches and failures register their own read-only admin on import (issue 3).
from portfolio.prices import admin as prices_admin  # noqa: F401


class ReadOnlyAdminMixin:
    """Viewable by staff with the view permission; nobody adds, changes or deletes, not even a
    superuser. For records written only by services."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CreateOnlyFieldsMixin:
    """Fields that are set when a row is created and shown read-only afterwards."""

    create_only_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly
        return readonly + tuple(f for f in self.create_only_fields if f not in readonly)


# The mandate: what pre-trade compliance checks every proposal against. DESIGN requires a
# second administrator for any change, and there is no four-eyes service for that yet, so the
# back office sets the mandate when a fund is created and shows it read-only afterwards.
MANDATE_FIELDS = (
    "max_asset_share",
    "max_proposal_notional_usd",
    "execution_window_days",
    "price_tolerance",
    "whitelisted_assets",
)


@admin.register(Fund)
class FundAdmin(CreateOnlyFieldsMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "reporting_currency",
        "max_asset_share",
        "max_proposal_notional_usd",
        "execution_window_days",
        "price_tolerance",
        "disclose_holdings",
        "created_at",
    )
    list_filter = ("disclose_holdings", "reporting_currency")
    search_fields = ("name", "slug")
    ordering = ("name",)
    filter_horizontal = ("whitelisted_assets",)
    readonly_fields = ("base_currency", "created_at")
    create_only_fields = ("slug", *MANDATE_FIELDS)
    fieldsets = (
        (None, {"fields": ("name", "slug", "base_currency", "reporting_currency")}),
        (
            _("Mandate"),
            {
                "fields": MANDATE_FIELDS,
                "description": _(
                    "Set when the fund is created. A mandate change needs a second "
                    "administrator, which the back office does not offer yet."
                ),
            },
        ),
        (_("Disclosure"), {"fields": ("disclose_holdings",)}),
        (_("Record"), {"fields": ("created_at",)}),
    )

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None else {}

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


@admin.register(Price)
class PriceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "asset",
        "price",
        "quote_currency",
        "source",
        "observed_at",
        "fetched_at",
        "entered_by",
    )
    list_filter = ("source", "quote_currency", "asset")
    search_fields = ("asset__symbol", "asset__name")
    date_hierarchy = "observed_at"
    ordering = ("-observed_at", "-id")
    list_select_related = ("asset", "entered_by")


@admin.register(FxRate)
class FxRateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("date", "base_currency", "quote_currency", "rate", "source")
    list_filter = ("source", "base_currency", "quote_currency")
    date_hierarchy = "date"
    ordering = ("-date", "base_currency", "quote_currency")


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
