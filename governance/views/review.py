"""Deciders' and treasury pages: my queue, one proposal, a decision, a fill.

Each view parses input, calls one service, translates its refusals and renders; what may be
decided or filled is enforced by ``governance.services``, through the predicates of
``governance.permissions`` that these pages ask too, so they offer a form only to someone the
service would accept.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _t
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from governance import compliance, permissions, selectors, services, wording
from governance.exceptions import GovernanceError, NotPermitted
from governance.models import Decision, Proposal, ProposalState
from governance.vocabulary import DECISION_NOTES, FILL_NOTES
from governance.web_forms import (
    DecisionForm,
    FillForm,
    WithdrawForm,
    add_service_errors,
    without_code,
)
from governance.wording import compliance_checks, refusal_message
from portfolio.models import Price
from portfolio.prices.consensus import FLAG_WORDS
from portfolio.prices.selectors import consensus_for, daily_price_closes
from portfolio.reconciliation.selectors import account_statuses

CHART_DAYS = 90
# Rows of each list on the queue: what waits for a decision or a fill, and one's own proposals.
QUEUE_PAGE_SIZE = 25
AUTHORED_PAGE_SIZE = 10

# States from which the compliance checks still lie ahead (submission or final approval), so a
# fresh preview says what the next step would meet.
PREVIEW_STATES = (ProposalState.DRAFT, ProposalState.CHANGES_REQUESTED, ProposalState.IN_REVIEW)


# ---------------------------------------------------------------------------------------------
# My queue
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """One page of a list on the queue and the links to its neighbours (other lists keep
    their pages)."""

    page: Page
    previous_url: str | None
    next_url: str | None


def _pager(request: HttpRequest, rows, param: str, size: int = QUEUE_PAGE_SIZE) -> Pager:
    """Page ``request.GET[param]`` of ``rows`` (the first for a missing or bad number, the
    last beyond the end)."""
    page = Paginator(rows, size).get_page(request.GET.get(param))

    def url(number: int) -> str:
        query = request.GET.copy()
        query.pop("since", None)
        query[param] = str(number)
        return f"{reverse('queue')}?{query.urlencode()}"

    return Pager(
        page=page,
        previous_url=url(page.previous_page_number()) if page.has_previous() else None,
        next_url=url(page.next_page_number()) if page.has_next() else None,
    )


def _since(request: HttpRequest) -> dt.datetime | None:
    """``?since=``: when the page the poll comes from was rendered (ISO 8601), or None."""
    value = parse_datetime(request.GET.get("since", ""))
    return value if value is not None and timezone.is_aware(value) else None


def _waiting_context(request: HttpRequest, roles: dict[int, set[str]]) -> dict:
    """What waits for the user, a page of each list: decisions longest waiting first, then
    approved proposals to execute, the nearest deadline first. With ``?since=`` it also counts
    what came into the lists after that moment (a stage that opened, an approval)."""
    user, now = request.user, timezone.now()
    decisions = selectors.decisions_awaiting_proposals(user, roles=roles)
    fills = selectors.fills_awaiting(user, now=now, roles=roles)
    decisions_pager = _pager(request, decisions, "page")
    fills_pager = _pager(request, fills, "fills_page")
    shown = selectors.awaiting_decisions(decisions_pager.page, now=now)
    keys = [f"d{item.proposal.pk}.{item.proposal.version}" for item in shown]
    keys += [f"f{proposal.pk}" for proposal in fills_pager.page]
    context = {
        "decisions": shown,
        "decisions_pager": decisions_pager,
        "fills": fills_pager.page,
        "fills_pager": fills_pager,
        "waiting_count": decisions_pager.page.paginator.count + fills_pager.page.paginator.count,
        "shown_keys": " ".join(keys),
        "rendered_at": now.isoformat(),
        "due_days": selectors.decision_due_days(),
    }
    since = _since(request)
    if since is not None:
        new = (
            decisions.filter(waiting_since__gt=since).count()
            + fills.filter(decided_at__gt=since).count()
        )
        context["new_count"] = new
        context["new_message"] = (
            ngettext("%(count)s new item waits for you.", "%(count)s new items wait for you.", new)
            % {"count": new}
            if new
            else ""
        )
    return context


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """What waits for the user: decisions, fills, their own proposals and their funds, each
    list a page at a time."""
    user = request.user
    roles = selectors.request_roles(request)
    funds = selectors.fund_summaries(user, roles=roles)
    authored = _pager(request, selectors.proposals_authored(user), "mine_page", AUTHORED_PAGE_SIZE)
    context = {
        **_waiting_context(request, roles),
        "authored": authored.page,
        "authored_pager": authored,
        "funds": funds,
        "propose_funds": [summary.fund for summary in funds if summary.can_propose],
        "nav_section": "queue",
        "poll_seconds": settings.ALEM_QUEUE_POLL_SECONDS,
    }
    return render(request, "governance/queue.html", context)


@login_required
@require_GET
def queue_updates(request: HttpRequest) -> HttpResponse:
    """The "waiting" part of the queue, for ``queue.js`` to swap in every
    ``ALEM_QUEUE_POLL_SECONDS``, on the pages the user is looking at.

    ``?since=`` is when the shown part was rendered; the answer says how many items came in
    after it.
    """
    context = _waiting_context(request, selectors.request_roles(request))
    response = render(request, "governance/_queue_waiting.html", context)
    response["X-Queue-Count"] = str(context["waiting_count"])
    response["X-Queue-New"] = str(context.get("new_count", 0))
    response["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------------------------
# One proposal
# ---------------------------------------------------------------------------------------------


def _concentration(report_json: dict) -> dict | None:
    for check in report_json.get("checks", []):
        values = check.get("values") or {}
        if check["rule"] == "concentration" and "post_trade_share" in values:
            return {
                "share": Decimal(values["post_trade_share"]),
                "limit": Decimal(values["limit"]),
                "outcome": check["outcome"],
            }
    return None


def _price_chart(proposal: Proposal) -> dict:
    closes = daily_price_closes(proposal.asset, days=CHART_DAYS)
    return {
        "unit": "USD",
        "series": [
            {
                "name": proposal.asset.symbol,
                "points": [
                    [day.isoformat(), format(price.normalize(), "f")] for day, price in closes
                ],
            }
        ],
    }


def _proposal_for(request: HttpRequest, pk: int) -> Proposal:
    """The proposal if it belongs to one of the user's funds; 404 otherwise (never 403)."""
    funds = selectors.request_roles(request)
    return get_object_or_404(selectors.proposal_list_for_user(request.user, fund_ids=funds), pk=pk)


def _note(notes: dict, refusal: GovernanceError | None) -> str:
    """Why a form is not offered, when the reason is one the person should be told."""
    return str(notes.get(refusal.reason, "")) if refusal is not None else ""


def _detail_context(
    request: HttpRequest,
    proposal: Proposal,
    *,
    decision_form: DecisionForm | None = None,
    fill_form: FillForm | None = None,
    refusal: GovernanceError | None = None,
) -> dict:
    user = request.user
    asset = wording.asset_symbol(proposal)
    roles = selectors.request_roles(request).get(proposal.fund_id, set())
    decision_refusal = permissions.decide_refusal(user, proposal, roles=roles)
    fill_refusal = permissions.fill_refusal(user, proposal, roles=roles)
    stage_reviews = selectors.proposal_stage_reviews(proposal)
    executions = list(selectors.proposal_executions(proposal))

    # An intake of US dollars has no market price: no price card, nothing to chart.
    consensus = consensus_for(proposal.asset) if proposal.asset is not None else None
    preview = None
    if proposal.state in PREVIEW_STATES:
        prices = {proposal.asset_id: consensus} if consensus is not None else {}
        preview = selectors.proposal_compliance_preview(proposal, prices=prices).as_json()
    stored = proposal.compliance or {}

    source_names = dict(Price.Source.choices)
    freshest = consensus.at - consensus.age if consensus and consensus.age is not None else None

    stages = proposal.policy.stages.all() if proposal.policy else []
    stage_names = {stage.order: stage.name for stage in stages}
    events = [
        wording.event_sentence(e, proposal, stage_names)
        for e in selectors.proposal_events(proposal)
    ]

    if decision_refusal is None and decision_form is None:
        decision_form = DecisionForm(initial={"stage_order": proposal.current_stage.order})
    if fill_refusal is None and fill_form is None:
        # No default time: the operator enters when the exchange filled the order.
        fill_form = FillForm(kind=proposal.kind)

    can = {
        "edit": permissions.edit_refusal(user, proposal, roles=roles) is None,
        "submit": permissions.submit_refusal(user, proposal, roles=roles) is None,
        "withdraw": permissions.withdraw_refusal(user, proposal, roles=roles) is None,
    }

    refusal_checks = []
    if refusal is not None and isinstance(refusal.context, dict):
        refusal_checks = compliance_checks(refusal.context, asset=asset, outcome=compliance.BLOCK)

    return {
        "proposal": proposal,
        "remaining_usd": proposal.remaining_usd,
        "asset_symbol": asset,
        "realised_pnl_usd": (
            selectors.realised_pnl_usd(executions) if proposal.kind == Proposal.Kind.SELL else None
        ),
        "is_author": proposal.author_id == user.pk,
        "author_can": can,
        "withdraw_form": WithdrawForm(label_suffix="") if can["withdraw"] else None,
        "decision_note": _note(DECISION_NOTES, decision_refusal),
        "decision_form": decision_form if decision_refusal is None else None,
        "fill_note": (
            _note(FILL_NOTES, fill_refusal) if proposal.state == ProposalState.APPROVED else ""
        ),
        "fill_form": fill_form if fill_refusal is None else None,
        "stored_checks": compliance_checks(stored, asset=asset),
        "stored_compliance": stored,
        "stored_checked_at": (
            dt.datetime.fromisoformat(stored["checked_at"]) if stored.get("checked_at") else None
        ),
        "preview_checks": compliance_checks(preview, asset=asset),
        "preview": preview,
        "concentration": _concentration(preview or stored),
        "consensus": consensus,
        "consensus_freshest": freshest,
        "consensus_flags": [
            str(FLAG_WORDS.get(flag, flag)) for flag in (consensus.flags if consensus else ())
        ],
        "quotes": [
            {"quote": q, "source": source_names.get(q.source, q.source)}
            for q in (consensus.quotes if consensus else ())
        ],
        "chart": _price_chart(proposal) if consensus is not None else None,
        "chart_days": CHART_DAYS,
        "stage_reviews": stage_reviews,
        "events": events,
        "executions": executions,
        "refusal": refusal,
        "refusal_message": refusal_message(refusal) if refusal is not None else "",
        "refusal_checks": refusal_checks,
    }


def _render_detail(request, proposal, *, status: int = 200, **forms_and_refusal) -> HttpResponse:
    accounts = [a for a in (proposal.account, proposal.destination_account) if a is not None]
    if accounts:
        statuses = account_statuses(a.pk for a in accounts)
        for account in accounts:
            account.reconciliation = statuses[account.pk]
    context = _detail_context(request, proposal, **forms_and_refusal)
    return render(request, "governance/proposal_detail.html", context, status=status)


def _refusal_status(error: GovernanceError) -> int:
    return 403 if isinstance(error, NotPermitted) else 409


@login_required
@require_GET
def proposal_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything a decider or the treasury needs to act on one proposal, and the form to act."""
    return _render_detail(request, _proposal_for(request, pk))


def _act(request: HttpRequest, pk: int, make_form, form_name: str, perform) -> HttpResponse:
    """Validate the form ``make_form(proposal, request.POST)`` and run ``perform(proposal,
    form)``, answering as every action on the proposal page does: the form again (400) on bad
    input, the refusal box (403 or 409) with the form refilled but for the one-time code when a
    rule refuses, else back to the proposal with the message ``perform`` left."""
    proposal = _proposal_for(request, pk)
    form = make_form(proposal, request.POST)
    if not form.is_valid():
        return _render_detail(request, proposal, status=400, **{form_name: form})
    try:
        perform(proposal, form)
    except GovernanceError as error:
        proposal = _proposal_for(request, pk)
        retry = without_code(form)
        if "stage_order" in retry.fields and proposal.current_stage is not None:
            # Offer the stage the proposal is at now; the refusal box said why it moved.
            retry.initial["stage_order"] = proposal.current_stage.order
        status = _refusal_status(error)
        return _render_detail(request, proposal, status=status, refusal=error, **{form_name: retry})
    except ValidationError as error:
        add_service_errors(form, error)
        return _render_detail(request, _proposal_for(request, pk), status=400, **{form_name: form})
    return redirect("proposal-detail", pk=proposal.pk)


_VERDICT_RECORDED = {
    Decision.Verdict.APPROVE: _("Your approval is recorded."),
    Decision.Verdict.REJECT: _("Your rejection is recorded; the proposal is rejected."),
    Decision.Verdict.REQUEST_CHANGES: _(
        "Your request for changes is recorded; the proposal is back with its author."
    ),
}


@login_required
@require_POST
def proposal_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Record the user's verdict with a fresh one-time code (``services.decision_record``)."""

    def decide(proposal: Proposal, form: DecisionForm) -> None:
        data = form.cleaned_data
        decision = services.decision_record(
            proposal_id=proposal.pk,
            user=request.user,
            verdict=data["verdict"],
            comment=data["comment"].strip(),
            stage_order=data["stage_order"],
            otp_token=data["otp_token"],
        )
        messages.success(request, _VERDICT_RECORDED[decision.verdict])

    return _act(request, pk, lambda _proposal, data: DecisionForm(data), "decision_form", decide)


@login_required
@require_POST
def execution_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Record one fill with a fresh one-time code (``services.execution_record``)."""

    def record(proposal: Proposal, form: FillForm) -> None:
        execution, created = services.execution_record(
            proposal_id=proposal.pk, actor=request.user, **form.fill_terms()
        )
        if created:
            messages.success(
                request,
                _t("The fill %(reference)s is booked.") % {"reference": execution.external_ref},
            )
            return
        recorded_at = timezone.localtime(execution.recorded_at)
        messages.info(
            request,
            _t("The fill %(reference)s was already booked on %(when)s; nothing was booked twice.")
            % {
                "reference": execution.external_ref,
                "when": formats.date_format(recorded_at, "DATETIME_FORMAT"),
            },
        )

    return _act(
        request,
        pk,
        lambda proposal, data: FillForm(data, kind=proposal.kind),
        "fill_form",
        record,
    )
