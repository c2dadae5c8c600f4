"""Proposals, their decisions and their audit timeline in the v1 API.

Thin: serializers parse, one service or selector acts, and ``alem.api.exception_handler`` turns
domain errors into 403 (no role for the action) or 409 (a rule, with its ``code``). Every
proposal is looked up among the caller's funds (``proposal_list_for_user`` for the list,
``proposals_of_user`` for one), so one outside them is a 404 whatever the method.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from governance import selectors, services
from governance.api.serializers import (
    KIND_TERMS,
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
# What any action on one proposal may answer instead of its result.
REFUSED = {400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT}


def _listing(summary: str, serializer_class):
    """The schema of a GET answering one page of a proposal's records."""
    responses = {200: serializer_class(many=True), 404: NOT_FOUND}
    return extend_schema(methods=["GET"], summary=summary, responses=responses)


def _proposal_action(name: str, service, *, summary: str, description=None, body=None):
    """A POST action on one proposal: runs ``service`` as the caller, with the fields of the
    ``body`` serializer if the action takes one, and answers with the proposal as it is now."""

    def view(self, request, pk=None):
        proposal_id = self._scoped_pk()
        fields = self._validated(body) if body is not None else {}
        service(proposal_id=proposal_id, actor=request.user, **fields)
        return self._respond(proposal_id)

    view.__name__ = name  # the router maps the HTTP method to the attribute of this name
    documented = extend_schema(
        summary=summary,
        description=description,
        request=body,
        responses={200: ProposalSerializer, **REFUSED},
    )
    return documented(action(detail=True, methods=["post"])(view))


@extend_schema_view(
    list=extend_schema(
        summary="Proposals of the caller's funds, newest first", description=KIND_TERMS
    ),
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
        if self.action == "list":
            return selectors.proposal_list_for_user(self.request.user)
        return selectors.proposals_of_user(self.request.user)

    def _scoped_pk(self) -> int:
        """The proposal's id if it belongs to one of the caller's funds, 404 otherwise: what a
        write needs before its service locks and reads the proposal itself (``get_object``
        would load everything the proposal's representation shows)."""
        return get_object_or_404(
            selectors.proposals_of_user(self.request.user).values_list("pk", flat=True),
            pk=self.kwargs["pk"],
        )

    def _respond(self, proposal_id: int, status_code: int = status.HTTP_200_OK) -> Response:
        """The proposal as it is now, read back through the caller's scoped selector."""
        proposal = self.get_queryset().get(pk=proposal_id)
        return Response(self.get_serializer(proposal).data, status=status_code)

    def _validated(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _page(self, rows, serializer_class) -> Response:
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(serializer_class(page, many=True).data)

    @extend_schema(
        summary="Draft a proposal of any kind (buy, sell, transfer, intake)",
        description=KIND_TERMS
        + "\n\nA request naming no `kind` is a buy, as is one with the deprecated `side` "
        '"buy". A term the kind needs and lacks, or one it does not take, an account or funding '
        "source of another fund, or an account on another chain is a 400 beside its field.",
        responses={201: ProposalSerializer, 400: INVALID, 403: FORBIDDEN},
    )
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        proposal = services.proposal_create(author=request.user, **serializer.validated_data)
        return self._respond(proposal.pk, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a draft or a proposal returned for changes (author only)",
        description="Any subset of the terms its kind takes; `kind`, `side` and `fund` are not "
        "editable (400). A sale's, transfer's or intake's `notional_usd` is revalued by the "
        "service.",
        responses={200: ProposalSerializer, **REFUSED},
    )
    def partial_update(self, request, pk=None):
        proposal = self.get_object()
        serializer = self.get_serializer(proposal, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.proposal_update(
            proposal_id=proposal.pk, actor=request.user, **serializer.validated_data
        )
        return self._respond(proposal.pk)

    submit = _proposal_action(
        "submit", services.proposal_submit, summary="Submit into review (author only)"
    )
    withdraw = _proposal_action(
        "withdraw",
        services.proposal_withdraw,
        summary="Withdraw (author only)",
        body=WithdrawSerializer,
    )

    @_listing("Decisions on every version of the proposal, oldest first", DecisionSerializer)
    @extend_schema(
        methods=["POST"],
        summary="Decide at the current stage",
        request=DecisionCreateSerializer,
        responses={201: DecisionSerializer, **REFUSED},
    )
    @action(detail=True, methods=["get", "post"])
    def decisions(self, request, pk=None):
        if request.method == "GET":
            # Prefetched with users and stages by proposals_of_user.
            return self._page(list(self.get_object().decisions.all()), DecisionSerializer)
        decision = services.decision_record(
            proposal_id=self._scoped_pk(),
            user=request.user,
            **self._validated(DecisionCreateSerializer),
        )
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)

    @_listing("The proposal's audit timeline, oldest first", AuditEventSerializer)
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        proposal = self.get_object()
        return self._page(selectors.proposal_events(proposal), AuditEventSerializer)

    @_listing("Fills booked against the proposal, in execution order", ExecutionSerializer)
    @extend_schema(
        methods=["POST"],
        summary="Record a fill of the proposal's kind (treasury operators)",
        description=(
            "Books the fill and its ledger entries, in the custody accounts the proposal names. "
            "By the proposal's kind: a buy or a sale takes its traded `price_usd` (required) "
            "and a `fee_usd`; a transfer takes no price (it is valued at the consensus price) "
            "and its network fee in units as `fee_quantity`; an intake takes neither a price "
            "nor a fee. A term the kind does not take, or a missing price, is a 400 beside its "
            "field.\n\n"
            "Posting an `external_ref` already booked for this proposal books nothing and "
            "answers 200 with that fill; one booked for another proposal is a 409 "
            "`duplicate_external_ref`. A fill that would break the approved mandate is a 409 "
            "whose `code` names the rule: `approval_expired`, `executed_in_future`, "
            "`executed_before_approval`, `above_limit_price` (a buy above its highest price), "
            "`below_limit_price` (a sale below its lowest price), `fee_above_limit` (the fee "
            "above the fund's `max_fee_share` of quantity × price, or of a transfer's quantity), "
            "`over_notional` (a buy costing more than remains), `over_quantity` (more units "
            "than remain), `insufficient_holdings` (the account does not hold what the fill "
            "takes out), `account_unusable` (an account removed or still cooling off), "
            "`consensus_unusable`, `price_outside_tolerance`, `segregation_of_duties` or "
            "`invalid_state`."
        ),
        request=ExecutionCreateSerializer,
        responses={
            200: OpenApiResponse(ExecutionSerializer, description="Already booked: that fill."),
            201: ExecutionSerializer,
            **REFUSED,
        },
    )
    @action(detail=True, methods=["get", "post"])
    def executions(self, request, pk=None):
        if request.method == "GET":
            # A read of the proposal's own fills; the proposal is already scoped to the caller.
            proposal = self.get_object()
            return self._page(selectors.proposal_executions(proposal), ExecutionSerializer)
        proposal_id = self._scoped_pk()
        fill = self._validated(ExecutionCreateSerializer)
        execution, created = services.execution_record(
            proposal_id=proposal_id, actor=request.user, **fill
        )
        return Response(
            ExecutionSerializer(execution).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    close = _proposal_action(
        "close",
        services.proposal_close,
        summary="Close a partly executed proposal (treasury operators)",
        description="Moves it to `executed`; the unspent notional is released.",
        body=CloseSerializer,
    )
