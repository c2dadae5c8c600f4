"""Funds and assets in the v1 API: read-only, funds scoped to the caller's roles.

A fund's positions, NAV history and custody accounts hang off the fund
(``/funds/{id}/positions/``, ``/funds/{id}/nav/``, ``/funds/{id}/custody-accounts/``), so they
share its scoping: any fund outside the caller's roles is a 404.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portfolio.api.serializers import (
    AssetSerializer,
    CustodyAccountSerializer,
    FundPositionsSerializer,
    FundSerializer,
    NavQuerySerializer,
    NavSnapshotSerializer,
)
from portfolio.models import Asset, Fund
from portfolio.selectors import (
    custody_accounts_with_holdings,
    fund_valuation,
    funds_for_user,
    nav_history,
)

NOT_FOUND = OpenApiResponse(description="No such fund among the caller's funds.")
INVALID = OpenApiResponse(description="Invalid input: errors per parameter.")


@extend_schema_view(
    list=extend_schema(summary="Funds the caller holds any role in"),
    retrieve=extend_schema(summary="One fund", responses={200: FundSerializer, 404: NOT_FOUND}),
)
class FundViewSet(viewsets.ReadOnlyModelViewSet):
    """Funds the caller holds any role in; any other fund is a 404."""

    serializer_class = FundSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Fund.objects.none()
        funds = funds_for_user(self.request.user)
        if self.action in ("positions", "nav", "custody_accounts"):
            return funds
        return funds.prefetch_related("whitelisted_assets", "funding_sources")

    @extend_schema(
        summary="Cash, positions and NAV now, in USD and in tenge",
        responses={200: FundPositionsSerializer, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def positions(self, request, pk=None):
        fund = self.get_object()
        current = fund_valuation(fund)
        return Response(FundPositionsSerializer({"fund": fund, "current": current}).data)

    @extend_schema(
        summary="End-of-day NAV history, oldest first",
        parameters=[NavQuerySerializer],
        responses={200: NavSnapshotSerializer(many=True), 400: INVALID, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def nav(self, request, pk=None):
        fund = self.get_object()
        query = NavQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        snapshots = nav_history(
            fund, start=query.validated_data.get("from"), end=query.validated_data.get("to")
        )
        page = self.paginate_queryset(snapshots)
        return self.get_paginated_response(NavSnapshotSerializer(page, many=True).data)

    @extend_schema(
        summary="Custody accounts and what each holds",
        description=(
            "Every custody account of the fund, removed ones included (`active` false), by "
            "name, each with its non-zero `positions`: quantity and cost in USD per asset, the "
            "sums of the ledger entries booked to it. Read-only: accounts are added, changed and "
            "removed only in the back office, where one fund administrator asks and a second "
            "confirms (four eyes); an added or changed account is usable from `usable_from`, "
            "after the fund's cooling-off."
        ),
        responses={200: CustodyAccountSerializer(many=True), 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], url_path="custody-accounts")
    def custody_accounts(self, request, pk=None):
        fund = self.get_object()
        accounts = custody_accounts_with_holdings(fund)
        return Response(CustodyAccountSerializer(accounts, many=True).data)


class AssetViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every asset Alem knows; whether a fund may buy one is its ``whitelisted_assets``."""

    serializer_class = AssetSerializer
    queryset = Asset.objects.order_by("symbol")
