"""The yardsticks of the real-size benchmark: what plain DRF and Django views cost on the same
server, middleware, authentication and tables as Alem's own.

Each does the least its real counterpart must: read the proposal rows and serialise or render
them. No scoping to the caller's funds, no stages, decisions or compliance: the ratio
real / bare says what Alem's own work costs on top of the stack.

- ``/bare/api/proposals/``: a ``ListAPIView`` with a ``ModelSerializer`` of every proposal
  column, in the order and with the pagination (so the page size) of the real list API;
- ``/bare/api/proposals/<pk>/``: the same serializer for one proposal;
- ``/bare/api/proposals/<pk>/touch/``: POST, the least a write can be: lock the proposal row and
  stamp it, in one transaction (the yardstick of a decision);
- ``/bare/page/``: a signed-in Django page of 25 proposal rows, in a template of its own.
"""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.views import ProposalViewSet
from governance.models import Proposal

PAGE_ROWS = 25


def ordered_proposals():
    """Every proposal, in the order the real list API answers them (the model's ordering)."""
    return Proposal.objects.order_by(*Proposal._meta.ordering)


class BareProposalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Proposal
        fields = "__all__"


class BareProposalList(generics.ListAPIView):
    serializer_class = BareProposalSerializer
    # The real view's pagination class, so the same page size whatever it becomes.
    pagination_class = ProposalViewSet.pagination_class

    def get_queryset(self):
        return ordered_proposals()


class BareProposalDetail(generics.RetrieveAPIView):
    serializer_class = BareProposalSerializer
    queryset = Proposal.objects.all()


class BareProposalTouch(APIView):
    def post(self, request, pk: int):
        with transaction.atomic():
            Proposal.objects.select_for_update(no_key=True).only("pk").get(pk=pk)
            Proposal.objects.filter(pk=pk).update(updated_at=timezone.now())
        return Response({"id": pk}, status=status.HTTP_201_CREATED)


@login_required
@require_GET
def bare_page(request):
    rows = ordered_proposals().select_related("asset")[:PAGE_ROWS]
    return render(request, "bench/bare_page.html", {"proposals": rows})


urlpatterns = [
    path("api/proposals/", BareProposalList.as_view(), name="bare-proposal-list"),
    path("api/proposals/<int:pk>/", BareProposalDetail.as_view(), name="bare-proposal-detail"),
    path("api/proposals/<int:pk>/touch/", BareProposalTouch.as_view(), name="bare-proposal-touch"),
    path("page/", bare_page, name="bare-page"),
]
