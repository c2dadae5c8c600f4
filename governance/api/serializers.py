"""Input and output shapes of proposals, decisions and audit events for the v1 API.

Serializers only check the format of each field (numbers, precision, known choices, objects the
caller may see). Every rule of the workflow is checked by ``governance.services``.
"""

from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance import selectors
from governance.models import AuditEvent, Decision, Execution, Proposal
from governance.roles import funds_for_user
from portfolio.models import Asset, Fund, FundingSource

AMOUNT = settings.ALEM_DECIMALS["amount"]


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


class ProposalSerializer(serializers.ModelSerializer):
    """A proposal as the API shows it; the writable fields are its terms.

    On create every term is required (``side`` defaults to buy); on PATCH any subset of the
    editable terms may be sent.
    """

    fund = CallerFundField(queryset=Fund.objects.all())
    asset = serializers.SlugRelatedField(slug_field="symbol", queryset=Asset.objects.all())
    funding_source = CallerFundingSourceField(queryset=FundingSource.objects.all())
    author = serializers.CharField(source="author.username", read_only=True)
    stages = serializers.SerializerMethodField()
    current_stage = serializers.IntegerField(
        source="current_stage.order",
        read_only=True,
        allow_null=True,
        help_text="Order of the stage deciding now; null unless in review.",
    )
    remaining_notional_usd = serializers.SerializerMethodField(
        help_text="notional_usd minus executed_notional_usd: what further fills may still cost "
        "while the proposal is approved."
    )

    class Meta:
        model = Proposal
        fields = [
            "id",
            "fund",
            "asset",
            "side",
            "notional_usd",
            "limit_price_usd",
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
            "compliance",
        ]
        read_only_fields = ["state", "version", "compliance", "executed_notional_usd"]
        read_only_fields += ["submitted_at", "approval_expires_at"]
        extra_kwargs = {
            "notional_usd": {"validators": [greater_than_zero]},
            "limit_price_usd": {"validators": [greater_than_zero]},
        }

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
        return self.fields["executed_notional_usd"].to_representation(proposal.remaining_usd)


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
    """A booked fill, with the consensus price it was checked against."""

    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)

    class Meta:
        model = Execution
        fields = ["id", "proposal", "quantity", "price_usd", "fee_usd", "cost_usd", "venue"]
        fields += ["external_ref", "executed_at", "recorded_by", "recorded_at", "evidence"]
        fields += ["confirmed_by_device", "tx_hash"]
        read_only_fields = fields


class ExecutionCreateSerializer(serializers.ModelSerializer):
    """A fill as the treasury reports it. Precision follows the columns: 18 decimals for the
    quantity, 10 for the price; a repeated ``external_ref`` is the service's to answer."""

    executed_at = WithOffsetDateTimeField()
    close = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also close the proposal: its unspent notional is released.",
    )
    otp_token = OtpTokenField()

    class Meta:
        model = Execution
        fields = ["quantity", "price_usd", "fee_usd", "venue", "external_ref", "executed_at"]
        fields += ["tx_hash", "close", "otp_token"]
        extra_kwargs = {
            "quantity": {"validators": [greater_than_zero]},
            "price_usd": {"validators": [greater_than_zero]},
            "fee_usd": {"min_value": Decimal("0"), "default": Decimal("0")},
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
