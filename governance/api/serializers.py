"""Input and output shapes of proposals, decisions and audit events for the v1 API.

Serializers only check the format of each field (numbers, precision, known choices, objects the
caller may see). Every rule of the workflow is checked by ``governance.services``.
"""

from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from governance import selectors
from governance.models import AuditEvent, Decision, Execution, OperationKind, Proposal
from governance.roles import funds_for_user
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource

AMOUNT = settings.ALEM_DECIMALS["amount"]
QUANTITY = settings.ALEM_DECIMALS["quantity"]


def greater_than_zero(value):
    if value <= 0:
        raise serializers.ValidationError("Must be greater than zero.")


class _CallerFundsField(serializers.PrimaryKeyRelatedField):
    """A primary key among objects of the caller's funds: any other id reads as nonexistent,
    so a client learns nothing about funds it holds no role in."""

    def get_queryset(self):
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is None:
            return self.queryset.none()
        return self.scope(self.queryset, funds_for_user(user))

    def scope(self, queryset, funds):
        raise NotImplementedError


class CallerFundField(_CallerFundsField):
    def scope(self, queryset, funds):
        return queryset.filter(pk__in=funds.values("pk"))


class CallerFundingSourceField(_CallerFundsField):
    def scope(self, queryset, funds):
        return queryset.filter(fund__in=funds.values("pk"))


class CallerCustodyAccountField(CallerFundingSourceField):
    """A custody account of one of the caller's funds; whether it is of the proposal's own fund
    (and on the asset's chain) is the service's to judge (``operations.terms_problems``)."""


class SideField(serializers.ChoiceField):
    """Deprecated: the proposal's ``kind`` under the name it had when every proposal was a buy.

    Shown equal to ``kind``. On create only ``buy`` is accepted (a request naming neither is a
    buy); on PATCH it is refused like ``kind``, since a proposal's kind never changes."""

    def __init__(self, **kwargs):
        super().__init__(choices=OperationKind.choices, required=False, **kwargs)

    def get_attribute(self, instance):
        return instance.kind


class StageStatusSerializer(serializers.Serializer):
    order = serializers.IntegerField()
    name = serializers.CharField()
    permission = serializers.CharField()
    quorum = serializers.IntegerField()
    approvals = serializers.ListField(
        child=serializers.CharField(), help_text="Usernames that approved the current version."
    )
    status = serializers.ChoiceField(
        choices=["complete", "current", "pending", "rejected", "changes_requested"]
    )


KIND_TERMS = """Terms by `kind` (a term the kind lacks or does not take is a 400 beside its field):

- `buy` (the default): `asset`, `notional_usd` (maximum spend, fees included), `limit_price_usd`
  (highest price), `funding_source`; optionally `account`, where the coins land.
- `sell`: `asset`, `quantity`, `limit_price_usd` (lowest price), `account` (where the coins are).
- `transfer`: `asset`, `quantity`, `account` (from) and `destination_account` (to), of the same
  fund and chain.
- `intake`: `quantity`, `funding_source`, `document_reference` (the court decision, mining
  statement or budget order); `asset` and `account` for coins, neither for US dollars.

For every kind but a buy, `notional_usd` is not given: the service sets it to the quantity's
value at the consensus price, and the policy's thresholds read it as they read a buy's."""


def _decimal_string(serializer, field: str, value) -> str | None:
    """``value`` rendered as the serializer renders ``field``: a decimal string, or null."""
    return None if value is None else serializer.fields[field].to_representation(value)


@extend_schema_serializer(deprecate_fields=["side"])
class ProposalSerializer(serializers.ModelSerializer):
    """A proposal as the API shows it; the writable fields are its terms.

    On create ``kind`` defaults to buy and the service judges which terms the kind needs; on
    PATCH any subset of the editable terms may be sent (``kind`` and ``fund`` never change).
    """

    fund = CallerFundField(queryset=Fund.objects.all())
    kind = serializers.ChoiceField(
        choices=OperationKind.choices,
        required=False,
        help_text="What the proposal does to the fund; buy when not given. Not editable.",
    )
    side = SideField(
        help_text="Deprecated: equal to `kind`, kept for clients written when every proposal was "
        'a buy. Accepted on create only as "buy"; use `kind`.',
    )
    asset = serializers.SlugRelatedField(
        slug_field="symbol",
        queryset=Asset.objects.all(),
        required=False,
        allow_null=True,
        help_text="Asset symbol; null only for an intake of US dollars.",
    )
    funding_source = CallerFundingSourceField(
        queryset=FundingSource.objects.all(),
        required=False,
        allow_null=True,
        help_text="Buy: the money spent; intake: where the assets come from. Null otherwise.",
    )
    account = CallerCustodyAccountField(
        queryset=CustodyAccount.objects.all(),
        required=False,
        allow_null=True,
        help_text="Custody account id of the proposal's fund. Buy (optional) and intake of coins: "
        "where the coins go; sell and transfer: where they come from.",
    )
    account_name = serializers.CharField(source="account.name", read_only=True, allow_null=True)
    destination_account = CallerCustodyAccountField(
        queryset=CustodyAccount.objects.all(),
        required=False,
        allow_null=True,
        help_text="Transfer: the custody account id the coins go to, on the same chain.",
    )
    destination_account_name = serializers.CharField(
        source="destination_account.name", read_only=True, allow_null=True
    )
    author = serializers.CharField(source="author.username", read_only=True)
    stages = serializers.SerializerMethodField()
    current_stage = serializers.IntegerField(
        source="current_stage.order",
        read_only=True,
        allow_null=True,
        help_text="Order of the stage deciding now; null unless in review.",
    )
    remaining_notional_usd = serializers.SerializerMethodField(
        help_text="notional_usd minus executed_notional_usd: what further fills of a buy may "
        "still cost while the proposal is approved."
    )
    remaining_quantity = serializers.SerializerMethodField(
        help_text="quantity minus executed_quantity: the units a sale, transfer or intake may "
        "still move; null for a buy."
    )

    class Meta:
        model = Proposal
        fields = [
            "id",
            "fund",
            "kind",
            "side",
            "asset",
            "notional_usd",
            "limit_price_usd",
            "quantity",
            "account",
            "account_name",
            "destination_account",
            "destination_account_name",
            "document_reference",
            "rationale",
            "funding_source",
            "state",
            "version",
            "author",
            "stages",
            "current_stage",
            "submitted_at",
            "approval_expires_at",
            "executed_notional_usd",
            "remaining_notional_usd",
            "executed_quantity",
            "remaining_quantity",
            "compliance",
        ]
        read_only_fields = ["state", "version", "compliance", "executed_notional_usd"]
        read_only_fields += ["executed_quantity", "submitted_at", "approval_expires_at"]
        extra_kwargs = {
            "notional_usd": {
                "required": False,
                "allow_null": True,
                "validators": [greater_than_zero],
                "help_text": "Buy: the maximum spend in USD, fees included (required). Other "
                "kinds: not given; their value at the consensus price, set by the service.",
            },
            "limit_price_usd": {
                "required": False,
                "allow_null": True,
                "validators": [greater_than_zero],
                "help_text": "Buy: the highest unit price the treasury may pay; sell: the lowest "
                "it may take. Null for a transfer or an intake.",
            },
            "quantity": {
                "required": False,
                "allow_null": True,
                "validators": [greater_than_zero],
                "help_text": "Sell, transfer and intake: how much, in units of the asset (US "
                "dollars for a cash intake), up to 18 decimals. Null for a buy.",
            },
        }

    def validate(self, attrs):
        """``side`` is ``kind`` under its old name: on create, "buy" (or nothing) is a buy and
        any other value points to ``kind``. On PATCH both go through to the service, which
        refuses to edit either."""
        if self.instance is None and "side" in attrs:
            side = attrs.pop("side")
            if side != OperationKind.BUY:
                raise serializers.ValidationError(
                    {"side": 'Deprecated and accepted only as "buy"; give other kinds in `kind`.'}
                )
            if attrs.setdefault("kind", side) != side:
                raise serializers.ValidationError({"side": "Contradicts `kind`; send `kind` only."})
        return attrs

    @extend_schema_field(StageStatusSerializer(many=True))
    def get_stages(self, proposal: Proposal) -> list[dict]:
        # StageStatusSerializer's fields, built directly: a nested serializer per proposal of a
        # page cost more than the rest of the proposal (tests/governance/test_api.py checks
        # that the two agree).
        return [
            {**vars(status), "approvals": list(status.approvals)}
            for status in selectors.proposal_stage_statuses(proposal)
        ]

    @extend_schema_field(serializers.DecimalField(max_digits=AMOUNT[0], decimal_places=AMOUNT[1]))
    def get_remaining_notional_usd(self, proposal: Proposal) -> str:
        return _decimal_string(self, "executed_notional_usd", proposal.remaining_usd)

    @extend_schema_field(
        serializers.DecimalField(
            max_digits=QUANTITY[0], decimal_places=QUANTITY[1], allow_null=True
        )
    )
    def get_remaining_quantity(self, proposal: Proposal) -> str | None:
        return _decimal_string(self, "executed_quantity", proposal.remaining_quantity)


class WithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class DecisionSerializer(serializers.ModelSerializer):
    """A recorded decision with the evidence the decider saw."""

    stage = serializers.IntegerField(source="stage.order", read_only=True)
    stage_name = serializers.CharField(source="stage.name", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Decision
        fields = [
            "id",
            "proposal_version",
            "stage",
            "stage_name",
            "user",
            "verdict",
            "comment",
            "evidence",
            "confirmed_by_device",
            "created_at",
        ]
        read_only_fields = fields


class OtpTokenField(serializers.CharField):
    """The step-up code of a decision or a fill. Optional here so the service, which checks
    the other rules first, answers a missing code with 403 ``second_factor_invalid``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault("write_only", True)
        kwargs.setdefault("help_text", "The current code from your authenticator app (step-up).")
        super().__init__(**kwargs)


class DecisionCreateSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Decision.Verdict.choices)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    stage = serializers.IntegerField(
        source="stage_order",
        required=False,
        min_value=1,
        help_text="Order of the stage the decision is meant for; refused unless it is current.",
    )
    otp_token = OtpTokenField()


class WithOffsetDateTimeField(serializers.DateTimeField):
    """A moment with its UTC offset. A time without one is refused rather than guessed: a
    fill's time decides which prices and which approval it is checked against."""

    default_error_messages = {
        "naive": "Give the time with its UTC offset, e.g. 2025-06-30T09:30:00Z or +05:00.",
    }

    def enforce_timezone(self, value):
        if timezone.is_naive(value):
            self.fail("naive")
        return super().enforce_timezone(value)


class ExecutionSerializer(serializers.ModelSerializer):
    """A booked fill of the proposal's ``kind``, with the consensus price it was checked
    against. ``cost_usd`` is quantity x price + fee for a buy, quantity x price - fee (the
    proceeds) for a sale, and quantity x the consensus price for a transfer or an intake."""

    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)
    account_name = serializers.CharField(source="account.name", read_only=True, allow_null=True)
    destination_account_name = serializers.CharField(
        source="destination_account.name", read_only=True, allow_null=True
    )

    class Meta:
        model = Execution
        fields = ["id", "proposal", "kind", "quantity", "price_usd", "fee_usd", "fee_quantity"]
        fields += ["cost_usd", "realised_pnl_usd", "account", "account_name"]
        fields += ["destination_account", "destination_account_name", "venue", "external_ref"]
        fields += ["executed_at", "recorded_by", "recorded_at", "evidence"]
        fields += ["confirmed_by_device", "tx_hash"]
        read_only_fields = fields
        extra_kwargs = {
            "price_usd": {
                "help_text": "The traded price of a buy or sale; the consensus price a transfer "
                "or an intake was valued at (1 for US dollars)."
            },
            "account": {"help_text": "The custody account the coins came into or out of."},
            "destination_account": {"help_text": "Transfer: the account the coins went to."},
        }


class ExecutionCreateSerializer(serializers.ModelSerializer):
    """A fill as the treasury reports it. Precision follows the columns: 18 decimals for
    quantities, 10 for the price; which terms the proposal's kind takes, and a repeated
    ``external_ref``, are the service's to answer."""

    executed_at = WithOffsetDateTimeField()
    close = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also close the proposal: its unspent notional or quantity is released.",
    )
    otp_token = OtpTokenField()

    class Meta:
        model = Execution
        fields = ["quantity", "price_usd", "fee_usd", "fee_quantity", "venue", "external_ref"]
        fields += ["executed_at", "tx_hash", "close", "otp_token"]
        extra_kwargs = {
            "quantity": {
                "validators": [greater_than_zero],
                "help_text": "Units bought, sold, delivered to the destination or received.",
            },
            "price_usd": {
                "required": False,
                "allow_null": True,
                "validators": [greater_than_zero],
                "help_text": "Buy and sell: the traded unit price (required). Transfer and "
                "intake: not given (or null); they are valued at the consensus price.",
            },
            "fee_usd": {
                "min_value": Decimal("0"),
                "default": Decimal("0"),
                "help_text": "Buy and sell: the fee in USD, at most the fund's max_fee_share of "
                "quantity x price. Not taken by a transfer or an intake.",
            },
            "fee_quantity": {
                "min_value": Decimal("0"),
                "default": Decimal("0"),
                "help_text": "Transfer: the network fee in units of the asset, taken from the "
                "source account on top of the quantity; at most max_fee_share of the quantity.",
            },
            # Not the model's unique validator: the same reference again is answered with the
            # fill already booked (or refused if it belongs to another proposal).
            "external_ref": {"validators": []},
        }


class CloseSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = ["sequence", "created_at", "actor", "action", "payload"]
        read_only_fields = fields


class ErrorSerializer(serializers.Serializer):
    """The body of a 403 or 409: a stable rule code and a sentence for people."""

    code = serializers.CharField()
    detail = serializers.CharField()
