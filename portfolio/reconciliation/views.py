"""The reconciliation page of a fund: accounts with their ledger and observed balances, breaks,
the auditors' explain form and the treasury operators' statement upload.

Thin: reads through ``portfolio.reconciliation.selectors``, writes through its services; a
refusal or an invalid form re-renders the page with the reason (status 403 or 400/409).
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from governance.exceptions import GovernanceError
from portfolio.exceptions import PortfolioError
from portfolio.models import CustodyAccount
from portfolio.reconciliation import selectors, services


class ExplainForm(forms.Form):
    explanation = forms.CharField(
        label=gettext_lazy("Explanation"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("What accounts for the difference (auditors)."),
    )
    proposal = forms.IntegerField(
        label=gettext_lazy("Proposal number"),
        required=False,
        min_value=1,
        help_text=gettext_lazy("The fund's proposal that explains the difference, if one does."),
    )


class StatementForm(forms.Form):
    account = forms.ModelChoiceField(
        label=gettext_lazy("Account"), queryset=CustodyAccount.objects.none()
    )
    file = forms.FileField(
        label=gettext_lazy("Statement (CSV)"),
        help_text=gettext_lazy(
            "Columns asset,balance,as_of; one line per asset, balances as decimal numbers, "
            "as_of as an ISO 8601 date or time."
        ),
    )

    def __init__(self, *args, fund, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = CustodyAccount.objects.filter(
            fund=fund, active=True, address=""
        ).order_by("name")


def _explain_form(break_id: int, data=None) -> ExplainForm:
    """The explain form of one break, its field ids its own (several breaks share the page)."""
    return ExplainForm(data, auto_id=f"id_break{break_id}_%s")


def _page(request, fund, *, explained=None, statement_form=None, status=200):
    """The page; ``explained`` is the bound explain form of the break just refused, if any."""
    recon = selectors.fund_reconciliation(fund)
    open_breaks = [
        (
            break_,
            explained
            if explained is not None and explained.auto_id == f"id_break{break_.pk}_%s"
            else _explain_form(break_.pk),
        )
        for break_ in recon.open_breaks
    ]
    context = {
        "nav_section": "portfolio",
        "nav_fund_id": fund.pk,
        "fund": fund,
        "recon": recon,
        "open_breaks": open_breaks,
        "may_explain": selectors.may_explain(request.user, fund),
        "may_comment": selectors.may_comment(request.user, fund),
        "may_upload": selectors.may_upload_statement(request.user, fund),
        "statement_form": statement_form or StatementForm(fund=fund),
    }
    return render(request, "portfolio/reconciliation.html", context, status=status)


def _fund(request, pk: int):
    return get_object_or_404(selectors.reconciliation_funds_for_user(request.user), pk=pk)


@login_required
@require_GET
def reconciliation(request, pk: int):
    """The fund's reconciliation; 404 for anyone not its auditor, administrator or treasury
    operator."""
    return _page(request, _fund(request, pk))


@login_required
@require_POST
def break_explain(request, pk: int, break_id: int):
    fund = _fund(request, pk)
    break_ = get_object_or_404(selectors.fund_breaks(fund), pk=break_id)
    form = _explain_form(break_.pk, request.POST)
    if not form.is_valid():
        return _page(request, fund, explained=form, status=400)
    try:
        services.break_explain(
            actor=request.user,
            break_id=break_.pk,
            explanation=form.cleaned_data["explanation"],
            proposal_id=form.cleaned_data["proposal"],
        )
    except (GovernanceError, PortfolioError) as error:
        messages.error(request, error.detail)
        return _page(request, fund, explained=form, status=error.status_code)
    except ValidationError as error:
        for message in error.messages:
            form.add_error(None, message)
        return _page(request, fund, explained=form, status=400)
    messages.success(request, _("The break is explained and closed. The ledger is unchanged."))
    return redirect("reconciliation", pk=fund.pk)


@login_required
@require_POST
def statement_upload(request, pk: int):
    fund = _fund(request, pk)
    form = StatementForm(request.POST, request.FILES, fund=fund)
    if not form.is_valid():
        return _page(request, fund, statement_form=form, status=400)
    upload = form.cleaned_data["file"]
    try:
        observations = services.statement_record(
            actor=request.user,
            account_id=form.cleaned_data["account"].pk,
            file_name=upload.name,
            content=upload.read(),
        )
    except GovernanceError as error:
        messages.error(request, error.detail)
        return _page(request, fund, statement_form=form, status=error.status_code)
    except ValidationError as error:
        for message in error.messages:
            form.add_error("file", message)
        return _page(request, fund, statement_form=form, status=400)
    opened = sum(1 for o in observations if hasattr(o, "opened_break"))
    messages.success(
        request,
        _("The statement is recorded: %(lines)s balance(s), %(breaks)s break(s) opened.")
        % {"lines": len(observations), "breaks": opened},
    )
    return redirect("reconciliation", pk=fund.pk)
