"""Fund managers' pages: draft and edit a proposal, submit it into review, withdraw it.

Thin: a form parses the input, one service acts, and a domain error becomes the refusal page
(403 for a missing role, 409 for a rule or state conflict) in plain words. Proposals and funds
are looked up among the user's funds only, so anything else is a 404.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from governance import compliance, permissions, services
from governance.exceptions import ComplianceBlocked, GovernanceError
from governance.models import Proposal
from governance.selectors import proposal_list_for_user
from governance.web_forms import ProposalForm, WithdrawForm, add_service_errors
from governance.wording import asset_symbol, compliance_checks, refusal_message
from portfolio.selectors import funds_for_user


def _refused(request, error: GovernanceError, *, proposal: Proposal | None = None, fund=None):
    """The refusal page for ``error``, with the status the API would answer."""
    fund = fund or (proposal.fund if proposal is not None else None)
    blocking = (
        compliance_checks(error.context, asset=asset_symbol(proposal), outcome=compliance.BLOCK)
        if isinstance(error, ComplianceBlocked) and proposal is not None
        else []
    )
    return render(
        request,
        "governance/proposal_refused.html",
        {
            "refusal": refusal_message(error),
            "code": error.code,
            "blocking_checks": blocking,
            "proposal": proposal,
            "fund": fund,
            "nav_fund_id": fund.pk if fund is not None else None,
        },
        status=error.status_code,
    )


# What the page calls a proposal of each kind, in its heading and its choice of kinds.
KIND_TITLES = {
    Proposal.Kind.BUY: gettext_lazy("Purchase"),
    Proposal.Kind.SELL: gettext_lazy("Sale"),
    Proposal.Kind.TRANSFER: gettext_lazy("Transfer between custody accounts"),
    Proposal.Kind.INTAKE: gettext_lazy("Intake from a funding source"),
}


def _kind_links(fund, current: str) -> list[dict]:
    """One link per kind to a new proposal's form: the choice of kind works without script."""
    url = reverse("proposal-new", args=[fund.pk])
    return [
        {"kind": kind, "title": title, "url": f"{url}?kind={kind}", "current": kind == current}
        for kind, title in KIND_TITLES.items()
    ]


def _form_page(request, form: ProposalForm, *, fund, proposal: Proposal | None = None):
    context = {
        "form": form,
        "fund": fund,
        "proposal": proposal,
        "kind": form.kind,
        "kind_title": KIND_TITLES[form.kind],
        "kind_links": _kind_links(fund, form.kind) if proposal is None else [],
        "withdraw_form": WithdrawForm() if proposal is not None else None,
        "cancel_url": (
            reverse("proposal-detail", args=[proposal.pk])
            if proposal is not None
            else reverse("portfolio", args=[fund.pk])
        ),
        "nav_fund_id": fund.pk,
    }
    return render(
        request,
        "governance/proposal_form.html",
        context,
        status=400 if form.is_bound and form.errors else 200,
    )


def _terms_page(
    request, *, fund, kind: str, proposal: Proposal | None, refusal, save, saved_message: str
):
    """The terms form of a new or an existing proposal of ``kind``: the refusal page if a rule
    refuses the user, else the form with that kind's fields; a valid form is saved by
    ``save(cleaned_data)``, which returns the proposal to go back to."""
    if refusal is not None:
        return _refused(request, refusal, fund=fund, proposal=proposal)
    data = request.POST if request.method == "POST" else None
    form = ProposalForm(data, fund=fund, kind=kind, proposal=proposal)
    if form.is_bound and form.is_valid():
        try:
            saved = save(form.cleaned_data)
        except ValidationError as error:
            add_service_errors(form, error)
        except GovernanceError as error:
            return _refused(request, error, fund=fund, proposal=proposal)
        else:
            messages.success(request, saved_message)
            return redirect("proposal-detail", pk=saved.pk)
    return _form_page(request, form, fund=fund, proposal=proposal)


@login_required
def proposal_new(request, fund_pk: int):
    """Draft a proposal of ``?kind=`` (a buy when none) for one of the user's funds
    (``propose`` role); an unknown kind is a page that does not exist."""
    fund = get_object_or_404(funds_for_user(request.user), pk=fund_pk)
    kind = request.GET.get("kind") or Proposal.Kind.BUY
    if kind not in Proposal.Kind.values:
        raise Http404("No such kind of operation.")
    return _terms_page(
        request,
        fund=fund,
        kind=kind,
        proposal=None,
        refusal=permissions.propose_refusal(request.user, fund),
        save=lambda terms: services.proposal_create(
            author=request.user, fund=fund, kind=kind, **terms
        ),
        saved_message=_("Draft saved. Check it, then submit it for review when it is ready."),
    )


@login_required
def proposal_edit(request, pk: int):
    """Edit the terms of the user's own draft, or of a proposal returned for changes."""
    proposal = get_object_or_404(proposal_list_for_user(request.user), pk=pk)
    return _terms_page(
        request,
        fund=proposal.fund,
        kind=proposal.kind,
        proposal=proposal,
        refusal=permissions.edit_refusal(request.user, proposal),
        save=lambda terms: services.proposal_update(
            proposal_id=proposal.pk, actor=request.user, **terms
        ),
        saved_message=_("Changes saved."),
    )


@login_required
@require_POST
def proposal_submit(request, pk: int):
    """Submit the user's draft into review; a compliance block lists the checks that block."""
    proposal = get_object_or_404(proposal_list_for_user(request.user), pk=pk)
    try:
        proposal = services.proposal_submit(proposal_id=proposal.pk, actor=request.user)
    except GovernanceError as error:
        return _refused(request, error, proposal=proposal)
    messages.success(request, _("The proposal is submitted and waits for its first review."))
    for check in compliance_checks(
        proposal.compliance, asset=asset_symbol(proposal), outcome=compliance.WARN
    ):
        messages.warning(
            request,
            _("Compliance warning, %(check)s: %(message)s")
            % {"check": check["label"], "message": check["sentence"]},
        )
    return redirect("proposal-detail", pk=proposal.pk)


@login_required
@require_POST
def proposal_withdraw(request, pk: int):
    """Withdraw the user's proposal, with an optional reason for the record."""
    proposal = get_object_or_404(proposal_list_for_user(request.user), pk=pk)
    form = WithdrawForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "governance/proposal_refused.html",
            {
                "withdraw_form": form,
                "proposal": proposal,
                "fund": proposal.fund,
                "nav_fund_id": proposal.fund_id,
            },
            status=400,
        )
    try:
        services.proposal_withdraw(
            proposal_id=proposal.pk, actor=request.user, reason=form.cleaned_data["reason"]
        )
    except GovernanceError as error:
        return _refused(request, error, proposal=proposal)
    messages.success(request, _("The proposal is withdrawn. It stays in the record."))
    return redirect("proposal-detail", pk=proposal.pk)
