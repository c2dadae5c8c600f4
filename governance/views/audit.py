"""Auditors' pages: the audit log of their funds, filtered and paginated, and its CSV export.

Only holders of the ``audit`` role see it, and only the events of the funds they audit. The
top of the log shows the latest verification of the whole chain (hourly, or when an auditor
asks with "Verify now"), so viewing the log never re-hashes it: at 100,000 events one
verification takes over a second.
"""

import csv
import json
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from governance import outbox, tasks
from governance.audit import (
    audit_chain_length,
    audit_events_for_user,
    audit_verification_latest,
)
from governance.models import AuditEvent
from governance.web_forms import AuditFilterForm
from governance.wording import action_label
from portfolio.models import FundRole
from portfolio.selectors import funds_for_user

PAGE_SIZE = 50
SUMMARY_LENGTH = 240
VALUE_LENGTH = 80

# Stable, untranslated column names: exports are read by tools as well as people.
CSV_COLUMNS = [
    "sequence",
    "time",
    "actor",
    "action",
    "fund",
    "proposal",
    "payload",
    "hash",
    "previous_hash",
]
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class LogRow:
    event: AuditEvent
    label: str
    summary: str
    payload_json: str


def _short(value, limit: int = VALUE_LENGTH) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload_summary(payload) -> str:
    """One line of the payload's top-level values: nested reports by outcome, lists by size.

    Keys in alphabetical order: PostgreSQL's jsonb does not keep the order they were written in,
    and the same event must read the same on every database."""
    if not isinstance(payload, dict):
        return _short(payload, SUMMARY_LENGTH)
    parts = []
    for key, value in sorted(payload.items()):
        if isinstance(value, dict):
            shown = value["outcome"] if "outcome" in value else ", ".join(map(str, value))
        elif isinstance(value, list):
            shown = f"[{len(value)}]"
        elif value is None or value == "":
            continue
        else:
            shown = value
        parts.append(f"{key}: {_short(shown)}")
    return _short("; ".join(parts), SUMMARY_LENGTH)


def _payload_json(payload) -> str:
    return json.dumps(payload, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True)


def _forbidden(request):
    return render(
        request,
        "governance/audit_log.html",
        {"forbidden": True, "nav_section": "audit"},
        status=403,
    )


def _log_page(request, form: AuditFilterForm):
    page = None
    rows = []
    if form.is_valid():
        events = audit_events_for_user(request.user, **form.filters())
        page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [
            LogRow(
                event=event,
                label=action_label(event.action),
                summary=payload_summary(event.payload),
                payload_json=json.dumps(
                    event.payload, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2
                ),
            )
            for event in page.object_list
        ]
    return render(
        request,
        "governance/audit_log.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            **_chain_context(),
            "nav_section": "audit",
        },
        status=200 if form.is_valid() else 400,
    )


def _chain_context() -> dict:
    verification = audit_verification_latest()
    recorded_since = 0
    if verification is not None and verification.ok:
        recorded_since = max(audit_chain_length() - verification.verified_count, 0)
    return {"verification": verification, "recorded_since": recorded_since}


def _audited_funds(request):
    return funds_for_user(request.user, roles=[FundRole.AUDIT])


@login_required
def audit_log(request):
    """The events of the funds the user audits, newest first, 50 a page."""
    funds = _audited_funds(request)
    if not funds.exists():
        return _forbidden(request)
    return _log_page(request, AuditFilterForm(request.GET, funds=funds))


@login_required
@require_POST
def audit_verify_request(request):
    """Queue a verification of the whole chain now (``governance.tasks.audit_chain_verify``);
    the log shows its result once it has run."""
    if not _audited_funds(request).exists():
        return _forbidden(request)
    # Through the outbox: with the broker down the request still succeeds and waits there.
    outbox.outbox_enqueue(tasks.audit_chain_verify, requested_by_id=request.user.pk)
    messages.success(
        request,
        _("The chain's verification is queued; its result shows here once it has run."),
    )
    return redirect("audit-log")


class _Echo:
    """A file-like object that hands back what is written, for streaming ``csv.writer``."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value):
    """``value`` made safe for spreadsheets: text that would run as a formula gets a quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _csv_row(event: AuditEvent) -> list:
    return [
        csv_cell(value)
        for value in (
            event.sequence,
            timezone.localtime(event.created_at).isoformat(),
            event.actor.username if event.actor is not None else "",
            event.action,
            event.fund.name if event.fund is not None else "",
            event.proposal_id if event.proposal_id is not None else "",
            _payload_json(event.payload),
            event.hash,
            event.previous_hash,
        )
    ]


@login_required
def audit_export(request):
    """The log with the same filters as the page, as a streamed CSV file (UTF-8 with BOM, so
    spreadsheets read Cyrillic names correctly)."""
    funds = _audited_funds(request)
    if not funds.exists():
        return _forbidden(request)
    form = AuditFilterForm(request.GET, funds=funds)
    if not form.is_valid():
        return _log_page(request, form)
    events = audit_events_for_user(request.user, **form.filters()).iterator(chunk_size=1000)
    writer = csv.writer(_Echo())

    def lines():
        yield "\ufeff" + writer.writerow(CSV_COLUMNS)
        for event in events:
            yield writer.writerow(_csv_row(event))

    filename = f"alem-audit-{timezone.localdate():%Y-%m-%d}.csv"
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
