"""A fund's reconciliation in the v1 API: each account's ledger and observed balances and the
breaks (GET), explaining a break (POST) and uploading a statement (POST, multipart).

Scoped like the page: a fund whose reconciliation the caller does not see (auditors, fund
administrators, treasury operators) is a 404. Writes go through
``portfolio.reconciliation.services``; their refusals reach the client through the project's
error format (``alem.api.exception_handler``: 403 ``not_permitted``, 409 ``break_not_open``,
400 with field errors).
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from portfolio.api.fields import ExactDecimalField
from portfolio.models import CustodyAccount
from portfolio.reconciliation import selectors, services

NOT_FOUND = OpenApiResponse(description="No such fund (or break) among the caller's funds.")
REFUSED = OpenApiResponse(description="The caller's role does not allow it (`not_permitted`).")
INVALID = OpenApiResponse(description="Invalid input: errors per field; a bad CSV names its line.")


class ObservationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.CharField()
    observed_quantity = ExactDecimalField()
    ledger_quantity = ExactDecimalField()
    difference = ExactDecimalField(help_text="Observed minus ledger.")
    observed_at = serializers.DateTimeField()
    block_number = serializers.IntegerField(allow_null=True)
    statement_reference = serializers.CharField()


class BalanceRowSerializer(serializers.Serializer):
    account = serializers.IntegerField(source="account.pk")
    account_name = serializers.CharField(source="account.name")
    chain = serializers.CharField(source="account.chain")
    address = serializers.CharField(source="account.address")
    account_reference = serializers.CharField(source="account.account_reference")
    asset = serializers.CharField(source="asset_symbol")
    ledger_quantity = ExactDecimalField()
    latest_observation = ObservationSerializer(source="observation", allow_null=True)
    status = serializers.ChoiceField(
        choices=list(selectors.STATUS_WORDS), help_text="matched, open_break, explained, …"
    )


class BreakSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    account_name = serializers.CharField(source="account.name")
    asset = serializers.CharField(source="asset.symbol")
    state = serializers.CharField()
    opened_at = serializers.DateTimeField()
    observation = serializers.IntegerField(source="observation_id")
    observed_quantity = ExactDecimalField()
    ledger_quantity = ExactDecimalField()
    difference = ExactDecimalField(help_text="Observed minus ledger.")
    explained_by = serializers.CharField(source="explained_by.username", allow_null=True)
    explained_at = serializers.DateTimeField(allow_null=True)
    explanation = serializers.CharField()
    proposal = serializers.IntegerField(source="proposal_id", allow_null=True)


class RunGapSerializer(serializers.Serializer):
    account = serializers.IntegerField()
    account_name = serializers.CharField()
    chain = serializers.CharField()
    asset = serializers.CharField()
    reason = serializers.CharField(required=False, help_text="Why it was skipped.")
    error = serializers.CharField(required=False, help_text="Why the reading failed.")


class FundReconciliationSerializer(serializers.Serializer):
    fund = serializers.IntegerField(source="fund.pk")
    last_run_at = serializers.DateTimeField(source="last_run.started_at", allow_null=True)
    balances = BalanceRowSerializer(source="rows", many=True)
    open_breaks = BreakSerializer(many=True)
    explained_breaks = BreakSerializer(many=True, help_text="The 50 latest explained.")
    skipped = RunGapSerializer(many=True, help_text="Not read by the latest run, and why.")
    failures = RunGapSerializer(many=True, help_text="Readings of the latest run that failed.")


class ExplainSerializer(serializers.Serializer):
    explanation = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    proposal = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class StatementUploadSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="A custody account of the fund without address.")
    file = serializers.FileField(help_text="CSV: asset,balance,as_of")


def _fund(request, fund_id: int):
    return get_object_or_404(selectors.reconciliation_funds_for_user(request.user), pk=fund_id)


class FundReconciliationView(APIView):
    @extend_schema(
        summary="Custody accounts' ledger and observed balances, breaks and the latest run's gaps",
        responses={200: FundReconciliationSerializer, 404: NOT_FOUND},
    )
    def get(self, request, fund_id: int):
        recon = selectors.fund_reconciliation(_fund(request, fund_id))
        return Response(FundReconciliationSerializer(recon).data)


class BreakExplainView(APIView):
    @extend_schema(
        summary="Explain a reconciliation break (auditors: a comment or a proposal; fund "
        "administrators: a proposal), which closes it",
        request=ExplainSerializer,
        responses={
            200: BreakSerializer,
            400: INVALID,
            403: REFUSED,
            404: NOT_FOUND,
            409: OpenApiResponse(description="Already explained (`break_not_open`)."),
        },
    )
    def post(self, request, fund_id: int, break_id: int):
        fund = _fund(request, fund_id)
        break_ = get_object_or_404(selectors.fund_breaks(fund), pk=break_id)
        body = ExplainSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        explained = services.break_explain(
            actor=request.user,
            break_id=break_.pk,
            explanation=body.validated_data.get("explanation", ""),
            proposal_id=body.validated_data.get("proposal"),
        )
        return Response(BreakSerializer(explained).data)


class StatementUploadView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Upload a custodian's or exchange's statement of an account without address "
        "(treasury operators)",
        request={"multipart/form-data": StatementUploadSerializer},
        responses={
            201: ObservationSerializer(many=True),
            400: INVALID,
            403: REFUSED,
            404: NOT_FOUND,
        },
    )
    def post(self, request, fund_id: int):
        fund = _fund(request, fund_id)
        body = StatementUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        account = get_object_or_404(
            CustodyAccount.objects.filter(fund=fund), pk=body.validated_data["account"]
        )
        upload = body.validated_data["file"]
        observations = services.statement_record(
            actor=request.user, account_id=account.pk, file_name=upload.name, content=upload.read()
        )
        return Response(
            ObservationSerializer(observations, many=True).data, status=status.HTTP_201_CREATED
        )
