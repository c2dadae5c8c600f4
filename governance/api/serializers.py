"""Input and output shapes of proposals, decisions and audit events for the v1 API.

Serializers only check the format of each field (numbers, precision, known choices, objects the
caller may see). Every rule of the workflow is checked by ``governance.services``.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance import selectors
from governance.models import AuditEvent, Decision, Proposal
from governance.roles import funds_for_user
from portfolio.models import Asset, Fund, FundingSource


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
            "compliance",
        ]
        read_only_fields = [
            "state",
            "version",
            "submitted_at",
            "approval_expires_at",
            "executed_notional_usd",
            "compliance",
        ]
        extra_kwargs = {
            "notional_usd": {"validators": [greater_than_zero]},
            "limit_price_usd": {"validators": [greater_than_zero]},
        }

    @extend_schema_field(StageStatusSerializer(many=True))
    def get_stages(self, proposal: Proposal) -> list[dict]:
        return StageStatusSerializer(selectors.proposal_stage_statuses(proposal), many=True).data


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
            "created_at",
        ]
        read_only_fields = fields


class DecisionCreateSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Decision.Verdict.choices)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    stage = serializers.IntegerField(
        source="stage_order",
        required=False,
        min_value=1,
        help_text="Order of the stage the decision is meant for; refused unless it is current.",
    )


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
