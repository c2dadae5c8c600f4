"""The auditors' log: only auditors, only their funds' events, filters, pagination, the chain's
verification at the top, and a CSV export with the same filters that spreadsheets cannot run."""

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timezone import localtime

from governance import audit, events
from governance.audit import audit_verification_run
from governance.models import AuditEvent, AuditVerification
from governance.views.audit import csv_cell, payload_summary
from governance.vocabulary import WRITTEN_BY_MIGRATIONS, AuditAction
from governance.wording import action_label
from portfolio.models import Fund
from tests.factories import FundBuilder
from tests.tampering import superuser_sql
from tests.web import signed_in

LOG = reverse("audit-log")
EXPORT = reverse("audit-export")
VERIFY = reverse("audit-verify")


@pytest.fixture
def other():
    """A second fund whose events Alem's auditor must never see."""
    return FundBuilder.alem_like(prefix="other_", asset_symbol="BNB")


def sequences(response) -> list[int]:
    return [row.event.sequence for row in response.context["rows"]]


def alem_sequences(alem, **filters) -> list[int]:
    events = AuditEvent.objects.filter(fund=alem.fund, **filters).order_by("-sequence")
    return list(events.values_list("sequence", flat=True))


def export_rows(response) -> list[list[str]]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(body)))


# ---------------------------------------------------------------------------------------------
# Who sees what
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["manager", "risk", "treasury", "fundadmin"])
def test_the_log_is_refused_to_everyone_but_auditors(client, alem, username):
    signed_in(client, alem.users[username])

    page = client.get(LOG)
    export = client.get(EXPORT)

    assert (page.status_code, export.status_code) == (403, 403)
    assert "You do not hold the auditor role on any fund." in page.content.decode()
    assert "rows" not in page.context


def test_an_auditor_sees_the_events_of_their_fund_newest_first_and_nothing_else(
    client, alem, other
):
    other.proposal()
    alem.proposal()
    signed_in(client, alem.users["auditor"])

    response = client.get(LOG)

    assert response.status_code == 200
    assert sequences(response) == alem_sequences(alem)
    assert len(sequences(response)) == 15
    assert not {row.event.fund_id for row in response.context["rows"]} - {alem.fund.pk}
    html = response.content.decode()
    assert other.fund.name not in html
    assert "Proposal created" in html
    assert "Role granted" in html


def test_the_page_shows_times_in_almaty_actor_action_proposal_link_and_summary(client, alem):
    proposal = alem.proposal()
    event = AuditEvent.objects.get(action="proposal.created")
    signed_in(client, alem.users["auditor"])

    response = client.get(LOG, {"action": "proposal.created"})

    html = response.content.decode()
    local = timezone.localtime(event.created_at)
    assert local.utcoffset().total_seconds() == 5 * 3600
    assert f'<time datetime="{local.isoformat()}">' in html
    assert local.strftime("%Y-%m-%d %H:%M:%S") in html
    assert f'href="{reverse("proposal-detail", args=[proposal.pk])}">#{proposal.pk}</a>' in html
    assert "<td>manager</td>" in html
    assert response.context["rows"][0].summary == (
        "asset: BNB; funding_source: Republican budget allocation; kind: buy; "
        "limit_price_usd: 650.00; notional_usd: 500000.00; "
        "rationale: Build the strategic BNB position.; version: 1"
    )


def test_every_audit_action_has_one_writer_and_a_plain_words_label():
    product = Path(settings.BASE_DIR)
    writers = Path(events.__file__).read_text()
    written = re.findall(r"\bAction\.([A-Z_]+)", writers)
    other_writers = [
        path
        for app in ("alem", "governance", "portfolio")
        for path in (product / app).rglob("*.py")
        if "audit_record(" in path.read_text() and path.name not in ("audit.py", "events.py")
    ]

    by_migrations = {action.name for action in WRITTEN_BY_MIGRATIONS}
    # each action once, and no other
    assert sorted(written) == sorted(set(AuditAction.names) - by_migrations)
    assert other_writers == []
    assert all(str(label) and str(label) != value for value, label in AuditAction.choices)
    assert action_label("decision.recorded") == "Decision recorded"
    assert action_label("something.new") == "something.new"


def test_a_payload_summary_names_nested_reports_by_outcome_and_lists_by_size():
    summary = payload_summary(
        {"code": "compliance_blocked", "compliance": {"outcome": "block"}, "stages": [1, 2]}
    )

    assert summary == "code: compliance_blocked; compliance: block; stages: [2]"  # by key


# ---------------------------------------------------------------------------------------------
# Filters and pages
# ---------------------------------------------------------------------------------------------


def test_filters_by_action_actor_proposal_and_fund(client, alem):
    first = alem.proposal(submit=True)
    alem.decide(first, "risk")
    second = alem.proposal()
    signed_in(client, alem.users["auditor"])

    by_action = client.get(LOG, {"action": "proposal.created"})
    by_actor = client.get(LOG, {"actor": "risk"})
    by_proposal = client.get(LOG, {"proposal": first.pk})
    by_fund = client.get(LOG, {"fund": alem.fund.pk, "proposal": second.pk})

    assert sequences(by_action) == alem_sequences(alem, action="proposal.created")
    assert len(sequences(by_action)) == 2
    assert sequences(by_actor) == alem_sequences(alem, actor=alem.users["risk"])
    assert [row.event.action for row in by_actor.context["rows"]] == [
        "proposal.stage_completed",
        "decision.recorded",
    ]
    assert sequences(by_proposal) == alem_sequences(alem, proposal=first)
    assert sequences(by_fund) == alem_sequences(alem, proposal=second)


def test_filters_by_days_in_almaty_time_the_end_day_included(client, alem):
    alem.proposal()
    today = timezone.localdate()
    with superuser_sql():
        AuditEvent.objects.filter(sequence__lte=3).update(
            created_at=timezone.now() - dt.timedelta(days=3)
        )
    signed_in(client, alem.users["auditor"])

    recent = client.get(LOG, {"date_from": today.isoformat(), "date_to": today.isoformat()})
    old = client.get(LOG, {"date_to": (today - dt.timedelta(days=1)).isoformat()})

    assert sequences(recent) == alem_sequences(alem, sequence__gt=3)
    assert sequences(old) == [3, 2, 1]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"proposal": "abc"}, "proposal", "Enter a whole number."),
        ({"proposal": "0"}, "proposal", "Ensure this value is greater than or equal to 1."),
        ({"date_from": "yesterday"}, "date_from", "Enter a valid date."),
        ({"date_from": "1000-01-01"}, "date_from", "Enter a date from the year 2000 on."),
        (
            {"date_from": "2026-03-02", "date_to": "2026-03-01"},
            "date_to",
            "The end date is before the start date.",
        ),
        ({"action": "proposal.hacked"}, "action", "Select a valid choice."),
        ({"fund": "999999"}, "fund", "Select a valid choice."),
    ],
)
def test_bad_filter_input_is_shown_beside_the_field_and_lists_nothing(
    client, alem, query, field, message
):
    signed_in(client, alem.users["auditor"])

    page = client.get(LOG, query)
    export = client.get(EXPORT, query)

    assert (page.status_code, export.status_code) == (400, 400)
    errors = page.context["form"].errors[field]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert page.context["rows"] == []
    html = page.content.decode()
    assert 'class="field field--error"' in html
    assert "Correct the filters above to see the events." in html
    assert not export.streaming


def test_another_funds_id_is_not_a_valid_fund_filter(client, alem, other):
    signed_in(client, alem.users["auditor"])

    response = client.get(LOG, {"fund": other.fund.pk})

    assert response.status_code == 400
    assert response.context["rows"] == []


def test_the_log_shows_fifty_events_a_page_and_keeps_the_filters_across_pages(client, alem):
    for _ in range(52):
        alem.proposal()
    signed_in(client, alem.users["auditor"])

    first = client.get(LOG, {"action": "proposal.created"})
    second = client.get(LOG, {"action": "proposal.created", "page": 2})

    expected = alem_sequences(alem, action="proposal.created")
    assert sequences(first) == expected[:50]
    assert sequences(second) == expected[50:]
    assert 'href="?action=proposal.created&amp;page=2"' in first.content.decode()
    assert "Page 1 of 2" in first.content.decode()


# ---------------------------------------------------------------------------------------------
# The chain's verification
# ---------------------------------------------------------------------------------------------


def test_the_page_shows_the_latest_verification_with_its_time(client, alem):
    audit_verification_run()
    checked = AuditVerification.objects.get()
    signed_in(client, alem.users["auditor"])

    response = client.get(LOG)

    html = response.content.decode()
    assert "Chain intact: 14 events verified." in html
    assert "audit-chain--ok" in html
    assert f"Checked on {date_format(localtime(checked.checked_at), 'DATETIME_FORMAT')}." in html
    assert "recorded since" not in html


def test_the_page_counts_the_events_recorded_since_the_last_verification(client, alem):
    audit_verification_run()
    alem.proposal()
    alem.proposal()
    signed_in(client, alem.users["auditor"])

    html = client.get(LOG).content.decode()

    assert "Chain intact: 14 events verified." in html
    assert "2 events recorded since are verified at the next check." in html


def test_viewing_the_log_does_not_rehash_the_chain(client, alem, monkeypatch):
    audit_verification_run()

    def rehash(*args, **kwargs):
        raise AssertionError("the page verified the chain itself")

    monkeypatch.setattr(audit, "verify_events", rehash)
    signed_in(client, alem.users["auditor"])

    assert client.get(LOG).status_code == 200


def test_before_the_first_verification_the_page_says_so(client, alem):
    signed_in(client, alem.users["auditor"])

    html = client.get(LOG).content.decode()

    assert "The chain has not been verified yet" in html
    assert "audit-chain--unknown" in html
    assert "Chain intact" not in html


def test_verify_now_checks_the_chain_and_names_the_first_tampered_event_in_red(
    client, alem, django_capture_on_commit_callbacks
):
    audit_verification_run()
    with superuser_sql():
        AuditEvent.objects.filter(sequence=5).update(payload={"role": "propose", "user": "mallory"})
    signed_in(client, alem.users["auditor"])

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(VERIFY)

    assert response.status_code == 302
    assert response["Location"] == LOG
    latest = AuditVerification.objects.first()
    assert (latest.ok, latest.first_bad_sequence, latest.requested_by) == (
        False,
        5,
        alem.users["auditor"],
    )
    html = client.get(LOG).content.decode()
    assert "verification is queued" in html
    assert "Chain broken at event #5." in html
    assert "audit-chain--broken" in html
    assert "its content does not match its hash" in html
    assert "Chain intact" not in html


@pytest.mark.parametrize("username", ["manager", "risk", "treasury"])
def test_verify_now_is_refused_to_everyone_but_auditors(client, alem, username):
    signed_in(client, alem.users[username])

    response = client.post(VERIFY)

    assert response.status_code == 403
    assert not AuditVerification.objects.exists()


def test_verify_now_takes_a_post_only(client, alem):
    signed_in(client, alem.users["auditor"])

    assert client.get(VERIFY).status_code == 405
    assert not AuditVerification.objects.exists()


# ---------------------------------------------------------------------------------------------
# CSV export
# ---------------------------------------------------------------------------------------------


def test_the_export_has_the_filtered_events_with_hashes_as_an_attachment(client, alem, other):
    proposal = alem.proposal(submit=True)
    other.proposal(submit=True)
    signed_in(client, alem.users["auditor"])

    response = client.get(EXPORT, {"proposal": proposal.pk})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="alem-audit-{timezone.localdate():%Y-%m-%d}.csv"'
    )
    rows = export_rows(response)
    assert rows[0] == [
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
    events = list(AuditEvent.objects.filter(proposal=proposal).order_by("-sequence"))
    assert [row[0] for row in rows[1:]] == [str(e.sequence) for e in events]
    submitted = rows[1]
    event = events[0]
    assert submitted == [
        str(event.sequence),
        timezone.localtime(event.created_at).isoformat(),
        "manager",
        "proposal.submitted",
        "Alem Crypto Fund",
        str(proposal.pk),
        json.dumps(event.payload, ensure_ascii=False, sort_keys=True),
        event.hash,
        event.previous_hash,
    ]
    assert submitted[1].endswith("+05:00")


def test_the_export_keeps_to_the_auditors_funds(client, alem, other):
    signed_in(client, alem.users["auditor"])

    rows = export_rows(client.get(EXPORT))

    assert [int(row[0]) for row in rows[1:]] == alem_sequences(alem)
    assert {row[4] for row in rows[1:]} == {"Alem Crypto Fund"}


def test_the_export_defuses_cells_a_spreadsheet_would_run_as_formulas(client, alem):
    Fund.objects.filter(pk=alem.fund.pk).update(name='=HYPERLINK("http://evil.example")')
    get_user_model().objects.filter(pk=alem.users["manager"].pk).update(username="@SUM(A1)")
    alem.proposal(rationale="=1+2")
    signed_in(client, alem.users["auditor"])

    rows = export_rows(client.get(EXPORT, {"action": "proposal.created"}))

    (row,) = rows[1:]
    assert row[2] == "'@SUM(A1)"
    assert row[4] == '\'=HYPERLINK("http://evil.example")'
    assert row[6].startswith("{")
    assert [csv_cell(v) for v in ("-1", "+1", "=1", "@a", "\tx", "ok", 5)] == [
        "'-1",
        "'+1",
        "'=1",
        "'@a",
        "'\tx",
        "ok",
        5,
    ]


# ---------------------------------------------------------------------------------------------
# Cost and safety of the pages
# ---------------------------------------------------------------------------------------------


def _queries(client, url, query) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, query)
        if response.streaming:
            b"".join(response.streaming_content)
    return len(captured.captured_queries)


@pytest.mark.parametrize("url", [LOG, EXPORT])
def test_the_number_of_queries_does_not_grow_with_the_events_shown(client, alem, url):
    signed_in(client, alem.users["auditor"])
    query = {"action": "proposal.created"}
    for _ in range(2):
        alem.proposal()
    _queries(client, url, query)  # the first request fills the process's caches (content types)
    with_two = _queries(client, url, query)
    for _ in range(18):
        alem.proposal()

    with_twenty = _queries(client, url, query)

    assert with_twenty == with_two
    assert AuditEvent.objects.filter(action="proposal.created").count() == 20


def test_the_log_runs_under_the_strict_csp_without_inline_code(client, alem):
    alem.proposal(notional_usd=Decimal("100.00"))
    signed_in(client, alem.users["auditor"])

    response = client.get(LOG)

    assert "default-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert all("src=" in tag or 'type="application/json"' in tag for tag in scripts)
    assert not re.search(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=", html)
