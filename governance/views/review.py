"""Deciders' and treasury pages: my queue, one proposal, a decision, a fill.

Each view parses input, calls one service, translates its refusals and renders; what may be
decided or filled is enforced by ``governance.services`` alone. The pages offer a form only to
someone the service would accept (``selectors.decision_eligibility``, ``fill_eligibility``).
"""

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import formats, timezone
from django.utils.translation import gettext as _t
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from governance import compliance, policies, selectors, services
from governance.exceptions import GovernanceError, NotPermitted
from governance.models import Decision, Proposal, ProposalState
from governance.refusals import REFUSALS, compliance_checks, refusal_message
from governance.roles import roles_on_fund
from governance.web_forms import (
    DecisionForm,
    FillForm,
    WithdrawForm,
    add_service_errors,
    without_code,
)
from portfolio.models import Price
from portfolio.prices.consensus import FLAG_WORDS
from portfolio.prices.selectors import consensus_for, daily_price_closes
from portfolio.templatetags.alem_format import money, quantity

CHART_DAYS = 90

# States from which the compliance checks still lie ahead (submission or final approval), so a
# fresh preview says what the next step would meet.
PREVIEW_STATES = (ProposalState.DRAFT, ProposalState.CHANGES_REQUESTED, ProposalState.IN_REVIEW)


# ---------------------------------------------------------------------------------------------
# My queue
# ---------------------------------------------------------------------------------------------


def _waiting_context(user, known: set[str] | None = None) -> dict:
    decisions = selectors.decisions_awaiting(user)
    fills = list(selectors.fills_awaiting(user))
    keys = [f"d{item.proposal.pk}.{item.proposal.version}" for item in decisions]
    keys += [f"f{proposal.pk}" for proposal in fills]
    context = {
        "decisions": decisions,
        "fills": fills,
        "waiting_count": len(keys),
        "waiting_keys": " ".join(keys),
        "due_days": selectors.decision_due_days(),
    }
    if known is not None:
        new = len(set(keys) - known)
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
    """What waits for the user: decisions, fills, their own proposals and their funds."""
    user = request.user
    funds = selectors.fund_summaries(user)
    context = {
        **_waiting_context(user),
        "authored": selectors.proposals_authored(user),
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
    ``ALEM_QUEUE_POLL_SECONDS``.

    ``?known=`` lists the item keys the page already shows; the answer says how many are new.
    """
    known = set(request.GET.get("known", "").split())
    context = _waiting_context(request.user, known=known)
    response = render(request, "governance/_queue_waiting.html", context)
    response["X-Queue-Count"] = str(context["waiting_count"])
    response["X-Queue-New"] = str(context["new_count"])
    response["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------------------------
# One proposal
# ---------------------------------------------------------------------------------------------

DECISION_NOTES = {
    "segregation_of_duties": _(
        "You are the author of this proposal, so you cannot decide on it. The policy's "
        "stages decide; you can follow their progress here."
    ),
    "not_permitted": _(
        "The current stage is decided by holders of another role; you can follow its progress."
    ),
    "already_decided": _("You have decided on this version already; one person counts once."),
}

FILL_NOTES = {
    "segregation_of_duties": _("You are the author of this proposal, so you cannot execute it."),
    "approved_by_you": _("You approved this proposal, so someone else must execute it."),
    "approval_expired": _("The approval has expired; the proposal accepts no more fills."),
}

VERDICT_SENTENCES = {
    Decision.Verdict.APPROVE: _("%(actor)s approved version %(version)s at %(stage)s."),
    Decision.Verdict.REJECT: _("%(actor)s rejected version %(version)s at %(stage)s."),
    Decision.Verdict.REQUEST_CHANGES: _(
        "%(actor)s requested changes to version %(version)s at %(stage)s."
    ),
}

EVENT_SENTENCES = {
    "proposal.created": _("%(actor)s drafted the proposal."),
    "proposal.updated": _("%(actor)s edited the proposal."),
    "proposal.submitted": _(
        "%(actor)s submitted version %(version)s for review under policy version "
        "%(policy_version)s."
    ),
    "proposal.submit_refused": _("%(actor)s tried to submit the proposal and was refused."),
    "proposal.withdrawn": _("%(actor)s withdrew the proposal."),
    "decision.refused": _("A decision by %(actor)s was refused."),
    "proposal.rejected": _("The proposal was rejected at %(stage)s."),
    "proposal.changes_requested": _("The proposal went back to its author for changes."),
    "proposal.stage_completed": _("%(stage)s completed; %(next_stage)s opened."),
    "proposal.approved": _("The proposal was approved; the approval is valid until %(expires)s."),
    "execution.recorded": _(
        "%(actor)s recorded a fill of %(quantity)s %(asset)s at USD %(price)s per unit, "
        "USD %(cost)s in all (reference %(reference)s)."
    ),
    "execution.refused": _("A fill recorded by %(actor)s was refused."),
    "proposal.executed": _("The proposal was executed: USD %(executed)s spent."),
    "proposal.expired": _("The approval expired before the proposal was fully executed."),
}


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    moment = dt.datetime.fromisoformat(iso)
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def _event_sentence(event, proposal: Proposal, stage_names: dict[int, str]) -> dict:
    """One audit event in plain words: the sentence, and the refusal or comment beside it."""
    payload = event.payload or {}

    def stage(order):
        return stage_names.get(order) or _t("stage %(order)s") % {"order": order}

    values = {
        "actor": (
            (event.actor.get_full_name() or event.actor.username)
            if event.actor
            else _t("Alem (automatic)")
        ),
        "version": payload.get("version", ""),
        "policy_version": payload.get("policy_version", ""),
        "stage": stage(payload.get("stage")),
        "next_stage": stage(payload.get("next_stage")),
        "expires": _when(payload.get("approval_expires_at")),
        "quantity": quantity(payload.get("quantity")),
        "asset": proposal.asset.symbol,
        "price": quantity(payload.get("price_usd")),
        "cost": money(payload.get("cost_usd")),
        "reference": payload.get("external_ref", ""),
        "executed": money(payload.get("executed_notional_usd")),
    }
    if event.action == "decision.recorded":
        template = VERDICT_SENTENCES.get(payload.get("verdict"))
    else:
        template = EVENT_SENTENCES.get(event.action)
    sentence = str(template) % values if template else event.action
    code = payload.get("code", "")
    return {
        "event": event,
        "sentence": sentence,
        "refusal": str(REFUSALS.get(code, payload.get("detail", ""))) if code else "",
        "code": code,
        "comment": payload.get("comment", "") if event.action == "decision.recorded" else "",
    }


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
    return get_object_or_404(selectors.proposal_list_for_user(request.user), pk=pk)


def _detail_context(
    request: HttpRequest,
    proposal: Proposal,
    *,
    decision_form: DecisionForm | None = None,
    fill_form: FillForm | None = None,
    refusal: GovernanceError | None = None,
) -> dict:
    user = request.user
    asset = proposal.asset.symbol
    roles = roles_on_fund(user, proposal.fund)
    decision = selectors.decision_eligibility(user, proposal, roles)
    fill = selectors.fill_eligibility(user, proposal, roles)
    stage_reviews = selectors.proposal_stage_reviews(proposal)

    preview = None
    if proposal.state in PREVIEW_STATES:
        preview = selectors.proposal_compliance_preview(proposal).as_json()
    stored = proposal.compliance or {}

    consensus = consensus_for(proposal.asset)
    source_names = dict(Price.Source.choices)
    freshest = consensus.at - consensus.age if consensus.age is not None else None

    stages = proposal.policy.stages.all() if proposal.policy else []
    stage_names = {stage.order: stage.name for stage in stages}
    events = [
        _event_sentence(e, proposal, stage_names) for e in selectors.proposal_events(proposal)
    ]

    if decision.allowed and decision_form is None:
        decision_form = DecisionForm(initial={"stage_order": proposal.current_stage.order})
    if fill.allowed and fill_form is None:
        # No default time: the operator enters when the exchange filled the order.
        fill_form = FillForm()

    is_author = proposal.author_id == user.pk
    can = {
        action: is_author and proposal.state in policies.TRANSITIONS[action][0]
        for action in ("edit", "submit", "withdraw")
    }
    can["withdraw"] = can["withdraw"] and proposal.executed_notional_usd == 0

    refusal_checks = []
    if refusal is not None and isinstance(refusal.context, dict):
        refusal_checks = compliance_checks(refusal.context, asset=asset, outcome=compliance.BLOCK)

    return {
        "proposal": proposal,
        "remaining_usd": proposal.notional_usd - proposal.executed_notional_usd,
        "is_author": is_author,
        "author_can": can,
        "withdraw_form": WithdrawForm(label_suffix="") if can["withdraw"] else None,
        "decision": decision,
        "decision_note": DECISION_NOTES.get(decision.reason, ""),
        "decision_form": decision_form if decision.allowed else None,
        "fill": fill,
        "fill_note": FILL_NOTES.get(fill.reason, "") if proposal.state == "approved" else "",
        "fill_form": fill_form if fill.allowed else None,
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
        "consensus_flags": [str(FLAG_WORDS.get(flag, flag)) for flag in consensus.flags],
        "quotes": [
            {"quote": q, "source": source_names.get(q.source, q.source)} for q in consensus.quotes
        ],
        "chart": _price_chart(proposal),
        "chart_days": CHART_DAYS,
        "stage_reviews": stage_reviews,
        "events": events,
        "executions": selectors.proposal_executions(proposal),
        "refusal": refusal,
        "refusal_message": refusal_message(refusal) if refusal is not None else "",
        "refusal_checks": refusal_checks,
    }


def _render_detail(request, proposal, *, status: int = 200, **forms_and_refusal) -> HttpResponse:
    context = _detail_context(request, proposal, **forms_and_refusal)
    return render(request, "governance/proposal_detail.html", context, status=status)


def _refusal_status(error: GovernanceError) -> int:
    return 403 if isinstance(error, NotPermitted) else 409


@login_required
@require_GET
def proposal_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything a decider or the treasury needs to act on one proposal, and the form to act."""
    return _render_detail(request, _proposal_for(request, pk))


@login_required
@require_POST
def proposal_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Record the user's verdict with a fresh one-time code (``services.decision_record``)."""
    proposal = _proposal_for(request, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, proposal, status=400, decision_form=form)
    data = form.cleaned_data
    try:
        decision = services.decision_record(
            proposal_id=proposal.pk,
            user=request.user,
            verdict=data["verdict"],
            comment=data["comment"].strip(),
            stage_order=data["stage_order"],
            otp_token=data["otp_token"],
        )
    except GovernanceError as error:
        proposal = _proposal_for(request, pk)
        retry = without_code(form)
        if proposal.current_stage is not None:
            # Offer the stage the proposal is at now; the refusal box said why it moved.
            retry.initial["stage_order"] = proposal.current_stage.order
        return _render_detail(
            request, proposal, status=_refusal_status(error), decision_form=retry, refusal=error
        )
    except ValidationError as error:
        add_service_errors(form, error)
        return _render_detail(request, _proposal_for(request, pk), status=400, decision_form=form)
    messages.success(
        request,
        {
            Decision.Verdict.APPROVE: _("Your approval is recorded."),
            Decision.Verdict.REJECT: _("Your rejection is recorded; the proposal is rejected."),
            Decision.Verdict.REQUEST_CHANGES: _(
                "Your request for changes is recorded; the proposal is back with its author."
            ),
        }[decision.verdict],
    )
    return redirect("proposal-detail", pk=proposal.pk)


@login_required
@require_POST
def execution_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Record one fill with a fresh one-time code (``services.execution_record``)."""
    proposal = _proposal_for(request, pk)
    form = FillForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, proposal, status=400, fill_form=form)
    data = form.cleaned_data
    try:
        execution, created = services.execution_record(
            proposal_id=proposal.pk,
            actor=request.user,
            quantity=data["quantity"],
            price_usd=data["price_usd"],
            fee_usd=data["fee_usd"],
            venue=data["venue"].strip(),
            external_ref=data["external_ref"].strip(),
            executed_at=data["executed_at"],
            otp_token=data["otp_token"],
            close=data["close"],
        )
    except GovernanceError as error:
        return _render_detail(
            request,
            _proposal_for(request, pk),
            status=_refusal_status(error),
            fill_form=without_code(form),
            refusal=error,
        )
    except ValidationError as error:
        add_service_errors(form, error)
        return _render_detail(request, _proposal_for(request, pk), status=400, fill_form=form)
    if created:
        messages.success(
            request,
            _t("The fill %(reference)s is booked.") % {"reference": execution.external_ref},
        )
    else:
        messages.info(
            request,
            _t("The fill %(reference)s was already booked on %(when)s; nothing was booked twice.")
            % {
                "reference": execution.external_ref,
                "when": formats.date_format(
                    timezone.localtime(execution.recorded_at), "DATETIME_FORMAT"
                ),
            },
        )
    return redirect("proposal-detail", pk=proposal.pk)
