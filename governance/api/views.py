"""Proposals, their decisions and their audit timeline in the v1 API.

Thin: serializers parse, one service or selector acts, and ``alem.api.exception_handler`` turns
domain errors into 403 (no role for the action) or 409 (a rule, with its ``code``). Every
proposal is looked up through ``proposal_list_for_user``, so one outside the caller's funds is a
404 whatever the method.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from governance import selectors, services
from governance.api.serializers import (
    AuditEventSerializer,
    CloseSerializer,
    DecisionCreateSerializer,
    DecisionSerializer,
    ErrorSerializer,
    ExecutionCreateSerializer,
    ExecutionSerializer,
    ProposalSerializer,
    WithdrawSerializer,
)
from governance.models import Proposal

NOT_FOUND = OpenApiResponse(description="No such proposal among the caller's funds.")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="The caller lacks the role for this.")
CONFLICT = OpenApiResponse(
    ErrorSerializer, description="A workflow rule refuses this; `code` names the rule."
)
INVALID = OpenApiResponse(description="Invalid input: errors per field.")


@extend_schema_view(
    list=extend_schema(summary="Proposals of the caller's funds, newest first"),
    retrieve=extend_schema(
        summary="One proposal", responses={200: ProposalSerializer, 404: NOT_FOUND}
    ),
)
class ProposalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ProposalSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Proposal.objects.none()
        return selectors.proposal_list_for_user(self.request.user)

    def _respond(self, proposal_id: int, status_code: int = status.HTTP_200_OK) -> Response:
        """The proposal as it is now, read back through the caller's scoped selector."""
        proposal = self.get_queryset().get(pk=proposal_id)
        return Response(self.get_serializer(proposal).data, status=status_code)

    @extend_schema(
        summary="Draft a proposal",
        responses={201: ProposalSerializer, 400: INVALID, 403: FORBIDDEN},
    )
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        proposal = services.proposal_create(author=request.user, **serializer.validated_data)
        return self._respond(proposal.pk, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a draft or a proposal returned for changes (author only)",
        responses={
            200: ProposalSerializer,
            400: INVALID,
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    def partial_update(self, request, pk=None):
        proposal = self.get_object()
        serializer = self.get_serializer(proposal, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.proposal_update(
            proposal_id=proposal.pk, actor=request.user, **serializer.validated_data
        )
        return self._respond(proposal.pk)

    @extend_schema(
        summary="Submit into review (author only)",
        request=None,
        responses={200: ProposalSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        proposal = self.get_object()
        services.proposal_submit(proposal_id=proposal.pk, actor=request.user)
        return self._respond(proposal.pk)

    @extend_schema(
        summary="Withdraw (author only)",
        request=WithdrawSerializer,
        responses={200: ProposalSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        proposal = self.get_object()
        serializer = WithdrawSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.proposal_withdraw(
            proposal_id=proposal.pk, actor=request.user, reason=serializer.validated_data["reason"]
        )
        return self._respond(proposal.pk)

    @extend_schema(
        methods=["GET"],
        summary="Decisions on every version of the proposal, oldest first",
        responses={200: DecisionSerializer(many=True), 404: NOT_FOUND},
    )
    @extend_schema(
        methods=["POST"],
        summary="Decide at the current stage",
        request=DecisionCreateSerializer,
        responses={
            201: DecisionSerializer,
            400: INVALID,
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    @action(detail=True, methods=["get", "post"])
    def decisions(self, request, pk=None):
        proposal = self.get_object()
        if request.method == "GET":
            # Prefetched with users and stages by proposal_list_for_user.
            page = self.paginate_queryset(list(proposal.decisions.all()))
            return self.get_paginated_response(DecisionSerializer(page, many=True).data)
        serializer = DecisionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        decision = services.decision_record(
            proposal_id=proposal.pk, user=request.user, **serializer.validated_data
        )
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="The proposal's audit timeline, oldest first",
        responses={200: AuditEventSerializer(many=True), 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        proposal = self.get_object()
        page = self.paginate_queryset(selectors.proposal_events(proposal))
        return self.get_paginated_response(AuditEventSerializer(page, many=True).data)

    @extend_schema(
        methods=["GET"],
        summary="Fills booked against the proposal, in execution order",
        responses={200: ExecutionSerializer(many=True), 404: NOT_FOUND},
    )
    @extend_schema(
        methods=["POST"],
        summary="Record a fill (treasury operators)",
        description=(
            "Books the fill and its ledger entries. Posting an `external_ref` already booked "
            "for this proposal books nothing and answers 200 with that fill; one booked for "
            "another proposal is a 409 `duplicate_external_ref`. A fill that would break the "
            "approved mandate is a 409 whose `code` names the rule: `approval_expired`, "
            "`executed_in_future`, `executed_before_approval`, `above_limit_price`, "
            "`over_notional`, `consensus_unusable`, `price_outside_tolerance`, "
            "`segregation_of_duties` or `invalid_state`."
        ),
        request=ExecutionCreateSerializer,
        responses={
            200: OpenApiResponse(ExecutionSerializer, description="Already booked: that fill."),
            201: ExecutionSerializer,
            400: INVALID,
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    @action(detail=True, methods=["get", "post"])
    def executions(self, request, pk=None):
        proposal = self.get_object()
        if request.method == "GET":
            # A read of the proposal's own fills; the proposal is already scoped to the caller.
            fills = selectors.proposal_executions(proposal)
            page = self.paginate_queryset(fills)
            return self.get_paginated_response(ExecutionSerializer(page, many=True).data)
        serializer = ExecutionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        execution, created = services.execution_record(
            proposal_id=proposal.pk, actor=request.user, **serializer.validated_data
        )
        return Response(
            ExecutionSerializer(execution).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        summary="Close a partly executed proposal (treasury operators)",
        description="Moves it to `executed`; the unspent notional is released.",
        request=CloseSerializer,
        responses={200: ProposalSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        proposal = self.get_object()
        serializer = CloseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.proposal_close(
            proposal_id=proposal.pk, actor=request.user, reason=serializer.validated_data["reason"]
        )
        return self._respond(proposal.pk)
