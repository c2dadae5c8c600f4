"""``GET /api/v1/prices/?asset=BNB``: recent prices per source and the consensus with its flags.

Prices are market data, not fund data: any authenticated user may read them.
"""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from portfolio.api.fields import OptionalSecondsField, SecondsField
from portfolio.models import Asset
from portfolio.prices.consensus import FLAGS
from portfolio.prices.selectors import price_overview

# Decimals as exact strings, unrounded (a median may carry one more place than its quotes).
_EXACT = {"max_digits": None, "decimal_places": None, "coerce_to_string": True}


class PriceQuerySerializer(serializers.Serializer):
    asset = serializers.CharField(max_length=16, help_text="Asset symbol, e.g. BNB.")
    limit = serializers.IntegerField(
        min_value=1, max_value=100, default=10, help_text="Recent prices per source."
    )


class RecentPriceSerializer(serializers.Serializer):
    price = serializers.DecimalField(**_EXACT)
    quote_currency = serializers.CharField()
    observed_at = serializers.DateTimeField()
    fetched_at = serializers.DateTimeField()
    manual = serializers.SerializerMethodField()

    def get_manual(self, price) -> bool:
        return price.source == "manual"


class SourcePricesSerializer(serializers.Serializer):
    source = serializers.CharField()
    prices = RecentPriceSerializer(many=True)


class ConsensusQuoteSerializer(serializers.Serializer):
    source = serializers.CharField()
    price = serializers.DecimalField(**_EXACT)
    quote_currency = serializers.CharField()
    observed_at = serializers.DateTimeField()
    age_seconds = SecondsField(source="age")
    fresh = serializers.BooleanField()


class ConsensusSerializer(serializers.Serializer):
    price_usd = serializers.DecimalField(source="price", allow_null=True, **_EXACT)
    at = serializers.DateTimeField()
    usable = serializers.BooleanField()
    flags = serializers.ListField(child=serializers.ChoiceField(choices=FLAGS))
    age_seconds = OptionalSecondsField(source="age")
    spread = serializers.DecimalField(allow_null=True, **_EXACT)
    max_divergence = serializers.DecimalField(**_EXACT)
    stale_after_seconds = SecondsField(source="stale_after")
    quotes = ConsensusQuoteSerializer(many=True)


class PriceOverviewSerializer(serializers.Serializer):
    asset = serializers.CharField(source="asset.symbol")
    consensus = ConsensusSerializer()
    sources = serializers.SerializerMethodField()

    @extend_schema_field(SourcePricesSerializer(many=True))
    def get_sources(self, overview) -> list:
        return SourcePricesSerializer(
            [{"source": source, "prices": rows} for source, rows in overview.recent.items()],
            many=True,
        ).data


class PriceView(APIView):
    """Recent prices of one asset per source, newest first, and its consensus price now."""

    @extend_schema(
        parameters=[PriceQuerySerializer],
        responses=PriceOverviewSerializer,
        operation_id="prices_retrieve",
    )
    def get(self, request):
        query = PriceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            overview = price_overview(
                symbol=query.validated_data["asset"], per_source=query.validated_data["limit"]
            )
        except Asset.DoesNotExist as exc:
            raise NotFound(f"No asset {query.validated_data['asset']!r}.") from exc
        return Response(PriceOverviewSerializer(overview).data)
