from django.urls import path
from rest_framework.routers import SimpleRouter

from portfolio.api.reconciliation import (
    BreakExplainView,
    FundReconciliationView,
    StatementUploadView,
)
from portfolio.api.views import AssetViewSet, FundViewSet

router = SimpleRouter()
router.register("funds", FundViewSet, basename="fund")
router.register("assets", AssetViewSet, basename="asset")

urlpatterns = [
    *router.urls,
    path(
        "funds/<int:fund_id>/reconciliation/",
        FundReconciliationView.as_view(),
        name="api-reconciliation",
    ),
    path(
        "funds/<int:fund_id>/reconciliation/breaks/<int:break_id>/explain/",
        BreakExplainView.as_view(),
        name="api-reconciliation-break-explain",
    ),
    path(
        "funds/<int:fund_id>/reconciliation/statements/",
        StatementUploadView.as_view(),
        name="api-reconciliation-statements",
    ),
]
