"""Output shapes of funds and assets for the v1 API. Read-only: nothing here writes."""

from rest_framework import serializers

from portfolio.models import Asset, Fund, FundingSource


class AssetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Asset
        fields = [
            "id",
            "symbol",
            "name",
            "chain",
            "binance_symbol",
            "coingecko_id",
            "peg_currency",
        ]
        read_only_fields = fields


class FundingSourceSerializer(serializers.ModelSerializer):
    class Meta:
        model = FundingSource
        fields = ["id", "name", "kind"]
        read_only_fields = fields


class FundSerializer(serializers.ModelSerializer):
    """A fund with its mandate limits; ``funding_sources`` are what proposals may draw on."""

    whitelisted_assets = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="symbol"
    )
    funding_sources = FundingSourceSerializer(many=True, read_only=True)

    class Meta:
        model = Fund
        fields = [
            "id",
            "name",
            "slug",
            "base_currency",
            "reporting_currency",
            "max_asset_share",
            "max_proposal_notional_usd",
            "execution_window_days",
            "price_tolerance",
            "disclose_holdings",
            "whitelisted_assets",
            "funding_sources",
            "created_at",
        ]
        read_only_fields = fields
