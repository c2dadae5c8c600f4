"""Back office pages of the reconciliation: read-only. Observations and runs are written by the
periodic task and statement uploads, breaks opened by observations and explained on the fund's
reconciliation page or the API (``portfolio.reconciliation.services``), never here."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from portfolio.admin_mixins import ReadOnlyAdminMixin, exact_column
from portfolio.models import BalanceObservation, ReconciliationBreak, ReconciliationRun


@admin.register(BalanceObservation)
class BalanceObservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "observed_at",
        "account",
        "asset",
        "source",
        "observed",
        "ledger",
        "diff",
        "block_number",
        "recorded_by",
    )
    list_filter = ("source", "account__fund", "asset")
    search_fields = ("account__name", "account__address", "statement_reference")
    date_hierarchy = "observed_at"
    list_select_related = ("account", "asset", "recorded_by")
    observed = exact_column("observed_quantity", _("observed"))
    ledger = exact_column("ledger_quantity", _("ledger"))
    diff = exact_column("difference", _("difference"))


@admin.register(ReconciliationBreak)
class ReconciliationBreakAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "pk",
        "opened_at",
        "account",
        "asset",
        "state",
        "diff",
        "explained_by",
        "explained_at",
        "proposal",
    )
    list_filter = ("state", "account__fund", "asset")
    search_fields = ("account__name", "explanation")
    date_hierarchy = "opened_at"
    list_select_related = ("account", "asset", "explained_by", "proposal")
    diff = exact_column("difference", _("difference"))


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("started_at", "finished_at", "observed", "breaks_opened", "gaps")
    date_hierarchy = "started_at"

    @admin.display(description=_("skipped / failed"))
    def gaps(self, run: ReconciliationRun) -> str:
        return f"{len(run.skipped)} / {len(run.failures)}"
