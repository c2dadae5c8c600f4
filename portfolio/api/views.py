"""Funds and assets in the v1 API: read-only, funds scoped to the caller's roles."""

from rest_framework import mixins, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from portfolio.api.serializers import AssetSerializer, FundSerializer
from portfolio.models import Asset, Fund
from portfolio.selectors import funds_for_user

# Token first: DRF answers an unauthenticated request with the first class's
# ``WWW-Authenticate`` challenge, and only then can it be a 401 (session auth has none).
API_AUTHENTICATION = (TokenAuthentication, SessionAuthentication)


class FundViewSet(viewsets.ReadOnlyModelViewSet):
    """Funds the caller holds any role in; any other fund is a 404."""

    authentication_classes = API_AUTHENTICATION
    serializer_class = FundSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Fund.objects.none()
        return funds_for_user(self.request.user).prefetch_related(
            "whitelisted_assets", "funding_sources"
        )


class AssetViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every asset Alem knows; whether a fund may buy one is its ``whitelisted_assets``."""

    authentication_classes = API_AUTHENTICATION
    serializer_class = AssetSerializer
    queryset = Asset.objects.order_by("symbol")
