"""The officials' pages of the portfolio app, and the public disclosure pages."""

from django.urls import path

from portfolio import public_views, views
from portfolio.reconciliation import views as reconciliation_views

urlpatterns = [
    path("funds/<int:pk>/", views.portfolio, name="portfolio"),
    path(
        "funds/<int:pk>/reconciliation/",
        reconciliation_views.reconciliation,
        name="reconciliation",
    ),
    path(
        "funds/<int:pk>/reconciliation/breaks/<int:break_id>/explain/",
        reconciliation_views.break_explain,
        name="reconciliation-break-explain",
    ),
    path(
        "funds/<int:pk>/reconciliation/statements/",
        reconciliation_views.statement_upload,
        name="reconciliation-statement-upload",
    ),
    path("public/", public_views.public_index, name="public-index"),
    path("public/<slug:slug>/", public_views.public_fund, name="public-fund"),
    path("public/<slug:slug>/data.json", public_views.public_fund_json, name="public-fund-json"),
    path(
        "public/<slug:slug>/purchases.csv",
        public_views.public_fund_purchases_csv,
        name="public-fund-purchases-csv",
    ),
    path(
        "public/<slug:slug>/feed.atom",
        public_views.PublicPurchasesFeed(),
        name="public-fund-feed",
    ),
]
