"""Output shapes of funds, assets, positions and NAV for the v1 API. Read-only: nothing here
writes."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portfolio.api.fields import (
    ExactDecimalField,
    ExactDecimalModelSerializer,
    OptionalSecondsField,
)
from portfolio.models import (
    AccountPosition,
    Asset,
    CustodyAccount,
    Fund,
    FundingSource,
    NavSnapshot,
)
from portfolio.prices.consensus import FLAGS


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
        fields = ["id", "name", "slug", "base_currency", "reporting_currency"]
        fields += [*Fund.MANDATE_LIMITS, *Fund.DISCLOSURE, "whitelisted_assets"]
        fields += ["funding_sources", "created_at"]
        read_only_fields = fields


# ---------------------------------------------------------------------------------------------
# Positions and NAV: every amount through ExactDecimalField, so "25000000", not
# "25000000.0000000000000000000000000000", and never rounded
# ---------------------------------------------------------------------------------------------


class ConsensusSummarySerializer(serializers.Serializer):
    """What the price of a position rests on; a flagged price is shown but cannot back a trade."""

    usable = serializers.BooleanField(help_text="Present and unflagged.")
    flags = serializers.ListField(child=serializers.ChoiceField(choices=FLAGS))
    sources = serializers.ListField(
        child=serializers.CharField(), help_text="Sources whose fresh quotes made the price."
    )
    age_seconds = OptionalSecondsField(
        source="age",
        help_text="Age of the freshest quote at the valuation time; null without quotes.",
    )


class PositionSerializer(serializers.Serializer):
    """One holding (``portfolio.calculations.Position``) valued at its consensus price."""

    asset = serializers.CharField(source="position.symbol")
    quantity = ExactDecimalField(source="position.quantity")
    average_cost_usd = ExactDecimalField(
        source="position.average_cost_usd",
        help_text="Cost basis per unit, to 28 significant digits.",
    )
    cost_basis_usd = ExactDecimalField(source="position.cost_basis_usd")
    price_usd = ExactDecimalField(
        source="position.price_usd", allow_null=True, help_text="The consensus price."
    )
    price = ConsensusSummarySerializer(source="consensus")
    market_value_usd = ExactDecimalField(source="position.market_value_usd", allow_null=True)
    unrealized_pnl_usd = ExactDecimalField(source="position.unrealized_pnl_usd", allow_null=True)
    share = ExactDecimalField(
        source="position.share",
        allow_null=True,
        help_text="Market value over NAV (0-1), to 28 significant digits.",
    )


class FundPositionsSerializer(serializers.Serializer):
    """A fund's cash, positions and NAV now; takes ``{"fund", "current"}`` where ``current`` is
    a ``portfolio.selectors.FundValuation``."""

    fund = serializers.IntegerField(source="fund.pk")
    valued_at = serializers.DateTimeField(source="current.at")
    cash_usd = ExactDecimalField(source="current.valuation.cash_usd")
    holdings_value_usd = ExactDecimalField(source="current.holdings_value_usd", allow_null=True)
    nav_usd = ExactDecimalField(
        source="current.valuation.nav_usd",
        allow_null=True,
        help_text="Cash plus every position's market value; null while a holding has no price.",
    )
    usd_kzt_rate = ExactDecimalField(
        source="current.rate.rate",
        allow_null=True,
        help_text="The National Bank's official rate in force on the valuation day.",
    )
    usd_kzt_rate_date = serializers.DateField(source="current.rate.date", allow_null=True)
    nav_kzt = ExactDecimalField(source="current.nav_kzt", allow_null=True)
    unpriced = serializers.ListField(
        source="current.valuation.unpriced",
        child=serializers.CharField(),
        help_text="Symbols of holdings without any price.",
    )
    positions = serializers.SerializerMethodField()

    @extend_schema_field(PositionSerializer(many=True))
    def get_positions(self, report) -> list:
        current = report["current"]
        rows = [
            {"position": p, "consensus": current.consensus[p.asset_id]}
            for p in current.valuation.positions
        ]
        return PositionSerializer(rows, many=True).data


class AccountHoldingSerializer(ExactDecimalModelSerializer):
    """What one custody account holds of one asset: the sums of the ledger entries booked to
    it, the cost at the fund's average cost as coins moved in and out."""

    asset = serializers.CharField(source="asset.symbol")

    class Meta:
        model = AccountPosition
        fields = ["asset", "quantity", "cost_usd"]
        read_only_fields = fields


class CustodyAccountSerializer(serializers.ModelSerializer):
    """Where the fund keeps coins, and what each account holds now."""

    positions = AccountHoldingSerializer(
        source="holdings",
        many=True,
        read_only=True,
        help_text="Its non-zero holdings by asset symbol.",
    )

    class Meta:
        model = CustodyAccount
        fields = ["id", "name", "kind", "chain", "address", "account_reference", "active"]
        fields += ["usable_from", "created_at", "removed_at", "positions"]
        read_only_fields = fields
        extra_kwargs = {
            "active": {"help_text": "False once removed: no operation uses it again."},
            "usable_from": {
                "help_text": "No operation uses it before this moment: its confirmation plus the "
                "fund's cooling-off."
            },
        }


class NavQuerySerializer(serializers.Serializer):
    """``?from=YYYY-MM-DD&to=YYYY-MM-DD``, both optional and inclusive."""

    def get_fields(self):
        # ``from`` is a Python keyword, so the fields cannot be class attributes.
        return {
            "from": serializers.DateField(
                required=False, input_formats=["iso-8601"], help_text="First day (inclusive)."
            ),
            "to": serializers.DateField(
                required=False, input_formats=["iso-8601"], help_text="Last day (inclusive)."
            ),
        }

    def validate(self, attrs):
        if "from" in attrs and "to" in attrs and attrs["from"] > attrs["to"]:
            raise serializers.ValidationError({"from": "Must not be after `to`."})
        return attrs


class NavPositionSerializer(serializers.Serializer):
    """A position as stored in a snapshot (decimals kept as strings there)."""

    asset = serializers.CharField()
    quantity = ExactDecimalField()
    cost_basis_usd = ExactDecimalField()
    price_usd = ExactDecimalField(allow_null=True)
    market_value_usd = ExactDecimalField(allow_null=True)
    # Plain strings: the flags of the consensus when the snapshot was taken (see ``flags`` of
    # the positions endpoint for the current set); a second enum here would duplicate its name.
    price_flags = serializers.ListField(child=serializers.CharField())


class NavSnapshotSerializer(ExactDecimalModelSerializer):
    """A fund's NAV at the end of one Almaty day (or so far today)."""

    positions = NavPositionSerializer(many=True, read_only=True)

    class Meta:
        model = NavSnapshot
        fields = ["date", "valued_at", "cash_usd", "holdings_value_usd", "nav_usd"]
        fields += ["usd_kzt_rate", "usd_kzt_rate_date", "nav_kzt", "positions", "taken_at"]
        read_only_fields = fields
