"""The HTTP API: version 1 under ``v1/``, the OpenAPI schema and its browsable docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from alem.api_auth import LogoutAllView, LogoutView, TokenListView, TokenRevokeView, TokenView
from portfolio.api.prices import PriceView

# ---------------------------------------------------------------------------------------------
# v1: auth, funds and assets, proposals and decisions
# ---------------------------------------------------------------------------------------------

v1_urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("auth/logout/", LogoutView.as_view(), name="api-logout"),
    path("auth/logout-all/", LogoutAllView.as_view(), name="api-logout-all"),
    path("auth/tokens/", TokenListView.as_view(), name="api-token-list"),
    path("auth/tokens/<int:pk>/", TokenRevokeView.as_view(), name="api-token-revoke"),
    path("", include("portfolio.api.urls")),
    path("", include("governance.api.urls")),
]

# ---------------------------------------------------------------------------------------------
# v1: prices -- GET /api/v1/prices/?asset=BNB, view in portfolio/api/prices.py.
# The prices work adds its route to this list; it is kept apart so the two changes meet here.
# ---------------------------------------------------------------------------------------------

prices_urlpatterns = [path("prices/", PriceView.as_view(), name="prices")]

# ---------------------------------------------------------------------------------------------

urlpatterns = [
    path("v1/", include(v1_urlpatterns + prices_urlpatterns)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
