"""Back office for market data: prices, official rates, each fetch run and each failure.

All read-only: only ``portfolio.prices.services`` writes them (governance adds an audited
manual price entry to the price list). Schedules are django-celery-beat's ("Periodic tasks").
``portfolio.admin`` imports this module, which registers the pages.
"""

from django.contrib import admin
from django.db.models import Count
from django.utils.translation import gettext_lazy as _

from portfolio.admin_mixins import ReadOnlyAdminMixin
from portfolio.prices.models import FetchFailure, FxRate, Price, PriceFetch


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


class FetchFailureInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = FetchFailure
    fields = ("reason", "asset", "http_status", "detail", "paused_until", "occurred_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(PriceFetch)
class PriceFetchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "started_at",
        "provider",
        "kind",
        "outcome",
        "stored",
        "attempts",
        "failure_count",
        "finished_at",
    )
    list_filter = ("provider", "kind", "outcome")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")
    readonly_fields = (
        "provider",
        "kind",
        "outcome",
        "requested",
        "stored",
        "attempts",
        "detail",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields
    inlines = [FetchFailureInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(failure_total=Count("failures"))

    @admin.display(description=_("failures"), ordering="failure_total")
    def failure_count(self, fetch):
        return fetch.failure_total


@admin.register(FetchFailure)
class FetchFailureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "provider",
        "reason",
        "asset",
        "http_status",
        "paused_until",
        "short_detail",
    )
    list_filter = ("provider", "reason")
    list_select_related = ("asset",)
    search_fields = ("detail", "asset__symbol")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at", "-id")
    readonly_fields = (
        "fetch",
        "provider",
        "reason",
        "asset",
        "http_status",
        "detail",
        "paused_until",
        "occurred_at",
    )
    fields = readonly_fields

    @admin.display(description=_("detail"))
    def short_detail(self, failure):
        return failure.detail if len(failure.detail) <= 100 else failure.detail[:99] + "…"
