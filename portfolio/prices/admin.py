"""Back office for market-data fetches: each run and each failure, read-only.

Prices and FX rates themselves are listed by ``portfolio.admin``; schedules by
django-celery-beat ("Periodic tasks"). ``portfolio.admin`` imports this module.
"""

from django.contrib import admin
from django.db.models import Count
from django.utils.translation import gettext_lazy as _

from portfolio.models import FetchFailure, PriceFetch


class ReadOnly:
    """Written by the fetch services only; nobody adds, changes or deletes them here."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class FetchFailureInline(ReadOnly, admin.TabularInline):
    model = FetchFailure
    fields = ("reason", "asset", "http_status", "detail", "paused_until", "occurred_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(PriceFetch)
class PriceFetchAdmin(ReadOnly, admin.ModelAdmin):
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
class FetchFailureAdmin(ReadOnly, admin.ModelAdmin):
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
