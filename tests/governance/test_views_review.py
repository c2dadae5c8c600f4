"""The deciders' and treasury pages: my queue, the proposal page, deciding and filling through it.

The fund of ``FundBuilder`` runs risk review (1), investment committee (2 of 3) and ministry
sign-off from USD 1M; it holds USD 25M and prices BNB at USD 600 (Binance) and USD 600.01
(CoinGecko), a usable consensus of USD 600.005. Every page is checked for the
Content-Security-Policy header and for no inline script, style or event handler.
"""

import datetime as dt
import json
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance import services
from governance.models import AuditEvent, Decision, Execution, Proposal, ProposalState
from governance.vocabulary import REFUSALS
from portfolio.models import FundRole, LedgerEntry, Price
from tests.factories import FundBuilder, PriceFactory, otp_code, otp_device
from tests.web import signed_in

D = Decimal
S = ProposalState
ALMATY = ZoneInfo("Asia/Almaty")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def assert_strict_page(response) -> str:
    """The page carries a CSP header and nothing the CSP would block: no inline script (only
    JSON data blocks), no style attribute, no inline event handler. Returns the HTML."""
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert " src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"<[^>]+\sstyle\s*=", html)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)
    return html


def get_page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status
    return assert_strict_page(response)


def waiting_keys(html: str) -> set[str]:
    """The items the queue's "waiting" part lists: d<pk>.<version> decisions, f<pk> fills."""
    return set(re.search(r'data-keys="([^"]*)"', html).group(1).split())


def queue_keys(client, user) -> set[str]:
    signed_in(client, user)
    return waiting_keys(get_page(client, reverse("queue")))


def detail_url(proposal: Proposal) -> str:
    return reverse("proposal-detail", args=[proposal.pk])


def decide_via_page(client, alem, proposal, username, verdict="approve", **fields):
    user = alem.users[username]
    signed_in(client, user)
    proposal.refresh_from_db()
    data = {
        "verdict": verdict,
        "comment": "",
        "stage_order": proposal.current_stage.order,
        "otp_token": otp_code(user),
        **fields,
    }
    return client.post(reverse("proposal-decide", args=[proposal.pk]), data)


def approved(alem: FundBuilder, **terms) -> Proposal:
    proposal = alem.approve_fully(alem.proposal(submit=True, **terms))
    assert proposal.state == S.APPROVED
    # Approved an hour ago, and priced by both sources a minute ago: a fill timed to the second
    # (as the form sends it) comes after the approval and has a usable consensus price.
    now = timezone.now()
    Proposal.objects.filter(pk=proposal.pk).update(decided_at=now - dt.timedelta(hours=1))
    for source, price in ((Price.Source.BINANCE, "600"), (Price.Source.COINGECKO, "600.01")):
        PriceFactory(
            asset=alem.asset,
            source=source,
            price=D(price),
            observed_at=now - dt.timedelta(minutes=1),
        )
    proposal.refresh_from_db()
    return proposal


def fill_data(alem, **fields) -> dict:
    executed_at = timezone.now().astimezone(ALMATY).replace(microsecond=0)
    return {
        "quantity": "100",
        "price_usd": "600.5",
        "fee_usd": "1.25",
        "venue": "Binance",
        "external_ref": "binance-order-1",
        "executed_at": executed_at.strftime("%Y-%m-%dT%H:%M:%S"),
        "otp_token": otp_code(alem.users["treasury"]),
        **fields,
    }


@pytest.fixture
def reserve(db):
    """A second fund with its own people (``reserve_`` prefix)."""
    return FundBuilder.alem_like(prefix="reserve_")


# ---------------------------------------------------------------------------------------------
# My queue
# ---------------------------------------------------------------------------------------------


def test_new_submission_waits_for_risk_only(client, alem):
    proposal = alem.proposal(submit=True)

    assert queue_keys(client, alem.users["risk"]) == {f"d{proposal.pk}.1"}
    assert queue_keys(client, alem.users["committee1"]) == set()
    assert queue_keys(client, alem.users["manager"]) == set()
    assert queue_keys(client, alem.users["ministry"]) == set()


def test_committee_sees_the_proposal_once_risk_approved_and_risk_no_longer_does(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")

    assert queue_keys(client, alem.users["risk"]) == set()
    for member in ("committee1", "committee2", "committee3"):
        assert queue_keys(client, alem.users[member]) == {f"d{proposal.pk}.1"}


def test_a_committee_member_who_decided_no_longer_waits_while_the_others_do(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")

    assert queue_keys(client, alem.users["committee1"]) == set()
    assert queue_keys(client, alem.users["committee2"]) == {f"d{proposal.pk}.1"}


def test_the_author_never_waits_on_their_own_proposal_even_holding_the_stage_role(client, alem):
    services.role_grant(user=alem.users["manager"], fund=alem.fund, role=FundRole.REVIEW_RISK)
    own = alem.proposal(submit=True, author="manager")
    other = alem.proposal(submit=True, author="manager2")

    assert queue_keys(client, alem.users["manager"]) == {f"d{other.pk}.1"}
    assert queue_keys(client, alem.users["risk"]) == {f"d{own.pk}.1", f"d{other.pk}.1"}


def test_a_resubmitted_version_waits_for_risk_again(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk", "request_changes", comment="Lower the notional.")
    assert queue_keys(client, alem.users["risk"]) == set()

    services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])

    assert queue_keys(client, alem.users["risk"]) == {f"d{proposal.pk}.2"}


def test_queue_rows_show_fund_asset_notional_stage_and_due_date(client, alem, settings):
    settings.ALEM_DECISION_DUE_DAYS = 3
    proposal = alem.proposal(submit=True, notional_usd=D("1234567.89"))
    submitted = AuditEvent.objects.get(proposal=proposal, action="proposal.submitted")
    proposal.refresh_from_db()
    # The stage opened with the submission, in the same transaction as its audit event.
    assert abs(proposal.stage_opened_at - submitted.created_at) < dt.timedelta(seconds=1)
    due = timezone.localtime(proposal.stage_opened_at + dt.timedelta(days=3))

    signed_in(client, alem.users["risk"])
    html = get_page(client, reverse("queue"))

    row = re.search(
        rf'<tr>\s*<th scope="row"><a href="{detail_url(proposal)}">.*?</tr>', html, re.S
    ).group(0)
    assert "Alem Crypto Fund" in row
    assert "<td>BNB</td>" in row
    assert '<td class="num">1,234,567.89</td>' in row
    assert "<td>Risk review</td>" in row
    assert f'datetime="{due.isoformat()}"' in row
    assert "Overdue" not in row


def test_a_decision_past_its_due_date_is_marked_overdue(client, alem, settings):
    settings.ALEM_DECISION_DUE_DAYS = 0
    alem.proposal(submit=True)

    signed_in(client, alem.users["risk"])
    html = get_page(client, reverse("queue"))

    assert 'class="is-overdue"' in html
    assert '<span class="badge badge--bad">Overdue</span>' in html


def test_treasury_sees_approved_proposals_to_fill_with_remaining_notional(client, alem):
    proposal = approved(alem)
    services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users["treasury"],
        quantity=D("100"),
        price_usd=D("600"),
        fee_usd=D("0"),
        venue="Binance",
        external_ref="first-fill",
        executed_at=timezone.now(),
        otp_token=otp_code(alem.users["treasury"]),
    )

    signed_in(client, alem.users["treasury"])
    html = get_page(client, reverse("queue"))

    assert waiting_keys(html) == {f"f{proposal.pk}"}
    assert '<td class="num">440,000.00</td>' in html
    assert queue_keys(client, alem.users["committee1"]) == set()
    assert queue_keys(client, alem.users["manager"]) == set()


def test_queue_lists_own_proposals_with_state_and_a_new_proposal_link(client, alem):
    draft = alem.proposal()
    submitted = alem.proposal(submit=True)

    signed_in(client, alem.users["manager"])
    html = get_page(client, reverse("queue"))

    authored = html.split('id="authored-heading"')[1].split('id="funds-heading"')[0]
    assert f'href="{detail_url(draft)}"' in authored
    assert f'href="{detail_url(submitted)}"' in authored
    assert '<span class="badge badge--draft">Draft</span>' in authored
    assert '<span class="badge badge--in_review">In review</span>' in authored
    new = reverse("proposal-new", args=[alem.fund.pk])
    assert [f"{new}?kind={kind}" for kind in ("buy", "sell", "transfer", "intake")] == re.findall(
        r'href="([^"]*/proposals/new/[^"]*)"', authored
    )

    signed_in(client, alem.users["risk"])
    assert "proposals/new" not in get_page(client, reverse("queue"))


def test_queue_summarises_each_fund_of_the_user(client, alem, reserve):
    alem.proposal(submit=True)

    signed_in(client, alem.users["risk"])
    html = get_page(client, reverse("queue"))

    summary = html.split('id="funds-heading"')[1]
    assert "Alem Crypto Fund" in summary
    assert "reserve_Alem Crypto Fund" not in summary
    assert summary.count("<dd>25,000,000.00</dd>") == 2  # NAV and cash, nothing held yet
    assert re.search(r"Proposals in review</dt>\s*<dd>1</dd>", summary)


def test_queue_needs_sign_in(client):
    response = client.get(reverse("queue"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def queue_rendered_at(html: str) -> str:
    return re.search(r'data-rendered-at="([^"]*)"', html).group(1)


def test_queue_updates_return_the_waiting_part_and_count_what_came_in_since(client, alem):
    first = alem.proposal(submit=True)
    signed_in(client, alem.users["risk"])
    since = queue_rendered_at(get_page(client, reverse("queue")))
    second = alem.proposal(submit=True)

    response = client.get(reverse("queue-updates"), {"since": since})

    assert response.status_code == 200
    html = assert_strict_page(response)
    assert response.headers["X-Queue-Count"] == "2"
    assert response.headers["X-Queue-New"] == "1"
    assert waiting_keys(html) == {f"d{first.pk}.1", f"d{second.pk}.1"}
    assert 'data-new-message="1 new item waits for you."' in html
    assert queue_rendered_at(html) > since
    assert "<html" not in html


def test_queue_updates_announce_nothing_when_nothing_is_new(client, alem):
    alem.proposal(submit=True)
    signed_in(client, alem.users["risk"])
    since = queue_rendered_at(get_page(client, reverse("queue")))

    response = client.get(reverse("queue-updates"), {"since": since})

    assert response.headers["X-Queue-New"] == "0"
    assert "data-new-message" not in response.content.decode()


@pytest.mark.parametrize("since", ["", "yesterday", "2026-12-04T10:00:00"])
def test_queue_updates_without_a_usable_since_count_nothing_as_new(client, alem, since):
    alem.proposal(submit=True)
    signed_in(client, alem.users["risk"])

    response = client.get(reverse("queue-updates"), {"since": since})

    assert response.status_code == 200
    assert response.headers["X-Queue-Count"] == "1"
    assert response.headers["X-Queue-New"] == "0"


def test_the_queue_shows_25_waiting_decisions_a_page_the_longest_waiting_first(client, alem):
    proposals = [alem.proposal(submit=True) for _ in range(27)]
    signed_in(client, alem.users["risk"])

    first = get_page(client, reverse("queue"))
    second = get_page(client, reverse("queue") + "?page=2")
    beyond = get_page(client, reverse("queue") + "?page=99")
    not_a_number = get_page(client, reverse("queue") + "?page=x")

    assert waiting_keys(first) == {f"d{p.pk}.1" for p in proposals[:25]}
    assert waiting_keys(second) == {f"d{p.pk}.1" for p in proposals[25:]}
    assert waiting_keys(beyond) == waiting_keys(second)
    assert waiting_keys(not_a_number) == waiting_keys(first)
    assert re.search(r'badge--current">27</span>', first)
    assert "1 to 25 of 27" in first and "26 to 27 of 27" in second
    assert 'href="/?page=2" rel="next"' in first
    assert 'href="/?page=1" rel="prev"' in second
    assert 'rel="next"' not in second


def test_the_queues_pages_keep_each_others_place(client, alem):
    for _ in range(27):
        alem.proposal(submit=True)
    signed_in(client, alem.users["risk"])

    html = get_page(client, reverse("queue") + "?page=2&mine_page=3")

    assert 'href="/?page=1&amp;mine_page=3" rel="prev"' in html


def test_the_authors_own_proposals_show_ten_a_page_the_latest_changed_first(client, alem):
    drafts = [alem.proposal() for _ in range(12)]
    signed_in(client, alem.users["manager"])

    first = get_page(client, reverse("queue"))
    second = get_page(client, reverse("queue") + "?mine_page=2")

    shown = lambda html: {int(pk) for pk in re.findall(r'href="/proposals/(\d+)/"', html)}  # noqa: E731
    assert shown(first) == {d.pk for d in drafts[2:]}
    assert shown(second) == {d.pk for d in drafts[:2]}
    assert "1 to 10 of 12" in first


# ---------------------------------------------------------------------------------------------
# The proposal page
# ---------------------------------------------------------------------------------------------


def test_a_proposal_of_another_fund_is_not_found(client, alem, reserve):
    theirs = reserve.proposal(submit=True)
    signed_in(client, alem.users["risk"])

    get_page(client, detail_url(theirs), status=404)
    response = client.post(
        reverse("proposal-decide", args=[theirs.pk]),
        {"verdict": "approve", "stage_order": 1, "otp_token": otp_code(alem.users["risk"])},
    )

    assert response.status_code == 404
    assert not Decision.objects.filter(proposal=theirs).exists()


def test_proposal_page_shows_terms_compliance_price_stages_and_history(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk", comment="Within the mandate.")
    signed_in(client, alem.users["committee1"])

    html = get_page(client, detail_url(proposal))

    assert f"Proposal #{proposal.pk}: buy BNB for up to USD 500,000.00" in html
    assert "Republican budget allocation" in html
    # Stored and fresh compliance, every check with its label and outcome.
    assert html.count('data-rule="concentration"') == 2
    assert "Asset on the fund&#x27;s whitelist" in html
    assert (
        "After this trade BNB would be 2.00% of the fund; the mandate allows at most 40.00%."
        in (html)
    )
    # Consensus with its sources.
    assert "<dd>600.005</dd>" in html
    assert '<th scope="row">Binance</th>' in html
    assert '<th scope="row">CoinGecko</th>' in html
    # Stages with who approved, and the timeline in plain words.
    assert "risk approved" in html
    assert "Within the mandate." in html
    assert "manager submitted version 1 for review under policy version 1." in html
    assert "risk approved version 1 at Risk review." in html
    assert "Risk review completed; Investment committee opened." in html


def test_proposal_page_holds_the_price_chart_data_and_its_table(client, alem):
    proposal = alem.proposal(submit=True)
    signed_in(client, alem.users["risk"])

    html = get_page(client, detail_url(proposal))

    assert '<div class="chart" data-chart="line" data-source="price-chart-data" role="img"' in html
    data = re.search(
        r'<script id="price-chart-data" type="application/json">(.*?)</script>', html
    ).group(1)
    today = timezone.now().astimezone(dt.UTC).date().isoformat()
    assert json.loads(data) == {
        "unit": "USD",
        "series": [{"name": "BNB", "points": [[today, "600.01"]]}],
    }
    assert '<details class="data-table">' in html
    assert f'<time datetime="{today}">{today}</time>' in html


def test_the_author_sees_no_decision_form_but_why(client, alem):
    proposal = alem.proposal(submit=True)
    signed_in(client, alem.users["manager"])

    html = get_page(client, detail_url(proposal))

    assert 'id="decision-form"' not in html
    assert 'name="verdict"' not in html
    assert "You are the author of this proposal, so you cannot decide on it." in html
    assert f'action="{reverse("proposal-withdraw", args=[proposal.pk])}"' in html


def test_the_author_of_a_draft_gets_edit_and_submit(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])

    html = get_page(client, detail_url(proposal))

    assert f'href="{reverse("proposal-edit", args=[proposal.pk])}"' in html
    assert f'action="{reverse("proposal-submit", args=[proposal.pk])}"' in html


def test_a_decider_of_a_later_stage_sees_no_form_yet(client, alem):
    proposal = alem.proposal(submit=True)
    signed_in(client, alem.users["committee1"])

    html = get_page(client, detail_url(proposal))

    assert 'id="decision-form"' not in html


# ---------------------------------------------------------------------------------------------
# Deciding through the page
# ---------------------------------------------------------------------------------------------


def test_risk_approves_through_the_page_with_a_code(client, alem):
    proposal = alem.proposal(submit=True)

    response = decide_via_page(client, alem, proposal, "risk", comment="Fine.")

    assert response.status_code == 302
    assert response.url == detail_url(proposal)
    decision = Decision.objects.get(proposal=proposal)
    assert (decision.user, decision.verdict, decision.comment) == (
        alem.users["risk"],
        "approve",
        "Fine.",
    )
    assert decision.confirmed_by_device == otp_device(alem.users["risk"]).persistent_id
    proposal.refresh_from_db()
    assert proposal.current_stage.order == 2
    html = get_page(client, response.url)
    assert "Your approval is recorded." in html
    assert 'id="decision-form"' not in html
    assert "You have decided on this version already; one person counts once." in html


def test_a_wrong_code_is_refused_with_403_and_nothing_is_recorded(client, alem):
    proposal = alem.proposal(submit=True)
    events_before = AuditEvent.objects.filter(proposal=proposal).count()

    response = decide_via_page(
        client, alem, proposal, "risk", "reject", comment="Too large.", otp_token="000000"
    )

    assert response.status_code == 403
    html = assert_strict_page(response)
    assert not Decision.objects.filter(proposal=proposal).exists()
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 1)
    # Only the refusal itself is audited.
    assert AuditEvent.objects.filter(proposal=proposal).count() == events_before + 1
    refusal = re.search(r'<div class="refusal" role="alert".*?</div>', html, re.S).group(0)
    assert str(REFUSALS["second_factor_invalid"]).replace("'", "&#x27;") in refusal
    assert "second_factor_invalid" in refusal
    # The form keeps the verdict and comment, never the code.
    assert 'value="reject" id="id_verdict_1" required checked' in html
    assert ">\nToo large.</textarea>" in html
    assert re.search(r'<input type="text" name="otp_token"(?![^>]*value=)[^>]*>', html)


def test_a_decider_without_an_authenticator_is_told_to_enrol_one(client, alem):
    proposal = alem.proposal(submit=True)
    risk = alem.users["risk"]
    client.force_login(risk)

    response = client.post(
        reverse("proposal-decide", args=[proposal.pk]),
        {"verdict": "approve", "stage_order": 1, "otp_token": "123456"},
    )

    # The enrolment middleware sends a decider without a device to enrol before any page.
    assert response.status_code == 302
    assert not Decision.objects.filter(proposal=proposal).exists()


def test_the_author_posting_a_decision_is_refused_with_409(client, alem):
    proposal = alem.proposal(submit=True)

    response = decide_via_page(client, alem, proposal, "manager")

    assert response.status_code == 409
    html = assert_strict_page(response)
    assert "segregation_of_duties" in html
    assert not Decision.objects.filter(proposal=proposal).exists()


def test_a_decision_for_a_stage_that_is_not_current_is_refused_with_409(client, alem):
    proposal = alem.proposal(submit=True)

    response = decide_via_page(client, alem, proposal, "risk", stage_order=2)

    assert response.status_code == 409
    assert "stage_not_current" in assert_strict_page(response)
    assert not Decision.objects.filter(proposal=proposal).exists()


def test_request_changes_without_a_comment_is_a_field_error(client, alem):
    proposal = alem.proposal(submit=True)

    response = decide_via_page(client, alem, proposal, "risk", "request_changes", comment="  ")

    assert response.status_code == 400
    html = assert_strict_page(response)
    assert re.search(
        r'<div class="field field--error">\s*<label for="id_comment">Comment</label>.*?'
        r'<ul class="errorlist" id="id_comment_error"><li>Say why: a comment is required to '
        r"reject or request changes.</li></ul>",
        html,
        re.S,
    )
    assert not Decision.objects.filter(proposal=proposal).exists()


def test_a_committee_rejection_with_a_comment_rejects_the_proposal(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")

    response = decide_via_page(client, alem, proposal, "committee2", "reject", comment="No.")

    assert response.status_code == 302
    proposal.refresh_from_db()
    assert proposal.state == S.REJECTED
    assert queue_keys(client, alem.users["committee1"]) == set()


# ---------------------------------------------------------------------------------------------
# Filling through the page
# ---------------------------------------------------------------------------------------------


def test_treasury_sees_the_fill_form_and_others_do_not(client, alem):
    proposal = approved(alem)

    signed_in(client, alem.users["treasury"])
    html = get_page(client, detail_url(proposal))
    assert 'id="fill-form"' in html
    assert "USD 500,000.00 of the approved notional remains" in html
    assert "The fee may be at most 1.00% of quantity × price." in html
    assert 'type="datetime-local"' in html

    signed_in(client, alem.users["committee1"])
    assert 'id="fill-form"' not in get_page(client, detail_url(proposal))
    signed_in(client, alem.users["manager"])
    assert 'id="fill-form"' not in get_page(client, detail_url(proposal))


def test_treasury_records_a_fill_through_the_page(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])
    data = fill_data(alem)

    response = client.post(reverse("execution-create", args=[proposal.pk]), data)

    assert response.status_code == 302
    assert response.url == detail_url(proposal)
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.quantity, execution.price_usd, execution.fee_usd, execution.cost_usd) == (
        D("100"),
        D("600.5"),
        D("1.25"),
        D("60051.25"),
    )
    # The wall-clock time typed is Almaty time.
    typed = dt.datetime.strptime(data["executed_at"], "%Y-%m-%dT%H:%M:%S")
    assert execution.executed_at == typed.replace(tzinfo=ALMATY)
    assert execution.confirmed_by_device == otp_device(alem.users["treasury"]).persistent_id
    proposal.refresh_from_db()
    assert (proposal.state, proposal.executed_notional_usd) == (S.APPROVED, D("60051.25"))
    html = get_page(client, response.url)
    assert "The fill binance-order-1 is booked." in html
    assert "binance-order-1" in html.split('id="executions-heading"')[1]


def test_the_same_external_reference_again_books_nothing_twice(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])
    client.post(reverse("execution-create", args=[proposal.pk]), fill_data(alem))
    entries = LedgerEntry.objects.count()

    response = client.post(reverse("execution-create", args=[proposal.pk]), fill_data(alem))

    assert response.status_code == 302
    assert Execution.objects.filter(proposal=proposal).count() == 1
    assert LedgerEntry.objects.count() == entries
    html = get_page(client, response.url)
    assert "The fill binance-order-1 was already booked on" in html
    assert "nothing was booked twice." in html


def test_a_fill_with_bad_input_is_a_400_with_field_errors(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(alem, quantity="abc", price_usd="0", executed_at="yesterday"),
    )

    assert response.status_code == 400
    html = assert_strict_page(response)
    assert (
        '<ul class="errorlist" id="id_quantity_error"><li>Enter a number, for example 1234.56.'
        "</li></ul>" in html
    )
    assert (
        '<ul class="errorlist" id="id_price_usd_error"><li>The price must be more than zero.'
        "</li></ul>" in html
    )
    assert (
        '<ul class="errorlist" id="id_executed_at_error"><li>Enter a valid date/time.</li></ul>'
        in html
    )
    assert 'value="Binance"' in html
    assert re.search(r'<input type="text" name="otp_token"(?![^>]*value=)[^>]*>', html)
    assert not Execution.objects.exists()


def test_a_russian_operator_types_a_fill_with_decimal_commas(client, alem, settings):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(alem, quantity="100,5", price_usd="600,5", fee_usd="1,25"),
    )

    assert response.status_code == 302
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.quantity, execution.price_usd, execution.fee_usd) == (
        D("100.5"),
        D("600.5"),
        D("1.25"),
    )


def test_more_decimals_than_the_ledger_holds_are_refused_not_rounded(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])
    entries = LedgerEntry.objects.count()

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(alem, quantity="1.0000000000000000001", price_usd="600.00000000001"),
    )

    assert response.status_code == 400
    assert response.context["fill_form"].errors == {
        "quantity": ["Enter at most 18 decimal places; amounts are never rounded."],
        "price_usd": ["Enter at most 10 decimal places; amounts are never rounded."],
    }
    assert 'value="1.0000000000000000001"' in response.content.decode()
    assert not Execution.objects.exists()
    assert LedgerEntry.objects.count() == entries


def test_a_fill_above_the_limit_price_is_refused_with_409_and_nothing_booked(client, alem):
    proposal = approved(alem, limit_price_usd=D("605"))
    signed_in(client, alem.users["treasury"])
    entries = LedgerEntry.objects.count()

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(alem, price_usd="606", venue="OKX"),
    )

    assert response.status_code == 409
    html = assert_strict_page(response)
    assert "above_limit_price" in html
    assert "The price is above the proposal&#x27;s limit price." in html
    assert 'value="OKX"' in html  # what was typed stays, except the code
    assert not Execution.objects.exists()
    assert LedgerEntry.objects.count() == entries


def test_a_fill_whose_fee_breaks_the_mandate_is_refused_with_409_and_nothing_booked(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])
    entries = LedgerEntry.objects.count()

    # 1% of 0.000001 x 600.5 is USD 0.000006005.
    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(alem, quantity="0.000001", fee_usd="99000"),
    )

    assert response.status_code == 409
    html = assert_strict_page(response)
    assert "fee_above_limit" in html
    assert str(REFUSALS["fee_above_limit"]).replace("'", "&#x27;") in html
    assert 'value="99000"' in html
    assert not Execution.objects.exists()
    assert LedgerEntry.objects.count() == entries
    proposal.refresh_from_db()
    assert (proposal.state, proposal.executed_notional_usd) == (S.APPROVED, 0)


def test_a_fill_with_a_wrong_code_is_refused_with_403(client, alem):
    proposal = approved(alem)
    signed_in(client, alem.users["treasury"])

    response = client.post(
        reverse("execution-create", args=[proposal.pk]), fill_data(alem, otp_token="000000")
    )

    assert response.status_code == 403
    assert "second_factor_invalid" in assert_strict_page(response)
    assert not Execution.objects.exists()


# ---------------------------------------------------------------------------------------------
# Query counts: flat in the number of proposals, decisions and events
# ---------------------------------------------------------------------------------------------


def count_queries(client, url: str) -> int:
    client.get(url)  # warm caches (content types, session) as a second visit would
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_queue_queries_do_not_grow_with_the_number_of_proposals(
    client, alem, django_assert_max_num_queries
):
    for _ in range(2):
        alem.proposal(submit=True)
    alem.proposal()
    signed_in(client, alem.users["risk"])
    few = count_queries(client, reverse("queue"))

    for _ in range(13):
        alem.proposal(submit=True)
    for _ in range(5):
        alem.proposal()

    with django_assert_max_num_queries(few):
        response = client.get(reverse("queue"))
    assert len(waiting_keys(response.content.decode())) == 15
    signed_in(client, alem.users["manager"])
    with django_assert_max_num_queries(few):
        client.get(reverse("queue"))


def test_queue_queries_do_not_grow_with_the_number_of_funds(
    client, alem, django_assert_max_num_queries
):
    from guardian.shortcuts import assign_perm

    from portfolio.services import ledger_entry_book
    from tests.factories import FundFactory

    def holding(fund):
        ledger_entry_book(
            fund=fund,
            kind=LedgerEntry.Kind.BUY,
            asset=alem.asset,
            quantity=D("2"),
            value_usd=D("1200"),
        )

    holding(alem.fund)
    signed_in(client, alem.users["risk"])
    few = count_queries(client, reverse("queue"))

    for _ in range(3):
        other = FundFactory()
        holding(other)
        assign_perm("portfolio.view_fund", alem.users["risk"], other)

    with django_assert_max_num_queries(few):
        response = client.get(reverse("queue"))
    assert response.content.decode().count('class="card fund-summary"') == 4


def test_treasury_queue_queries_do_not_grow_with_the_number_of_approved_proposals(
    client, alem, django_assert_max_num_queries
):
    for _ in range(2):
        approved(alem, notional_usd=D("100000.00"))
    signed_in(client, alem.users["treasury"])
    few = count_queries(client, reverse("queue"))

    for _ in range(6):
        approved(alem, notional_usd=D("100000.00"))

    with django_assert_max_num_queries(few):
        response = client.get(reverse("queue"))
    assert len(waiting_keys(response.content.decode())) == 8


def test_proposal_page_queries_do_not_grow_with_decisions_and_history(
    client, alem, django_assert_max_num_queries
):
    short = alem.proposal(submit=True)
    alem.decide(short, "risk")
    signed_in(client, alem.users["committee1"])
    few = count_queries(client, detail_url(short))

    long = alem.proposal(submit=True)
    for round_ in range(4):
        alem.decide(long, "risk", "request_changes", comment=f"Round {round_}.")
        services.proposal_update(
            proposal_id=long.pk, actor=alem.users["manager"], rationale=f"Version {round_ + 2}."
        )
        services.proposal_submit(proposal_id=long.pk, actor=alem.users["manager"])
    alem.decide(long, "risk")
    alem.decide(long, "committee2")
    assert AuditEvent.objects.filter(proposal=long).count() > 20

    with django_assert_max_num_queries(few):
        response = client.get(detail_url(long))
    assert 'id="decision-form"' in response.content.decode()


def test_a_final_approval_on_a_stale_price_is_refused_with_the_blocking_check(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")
    Price.objects.update(observed_at=timezone.now() - dt.timedelta(hours=2))

    response = decide_via_page(client, alem, proposal, "committee2")

    assert response.status_code == 409
    html = assert_strict_page(response)
    refusal = re.search(r'<div class="refusal" role="alert".*?</div>', html, re.S).group(0)
    assert "compliance_blocked" in refusal
    assert (
        "<li>Usable market price: The consensus price of BNB cannot back an approval: The "
        "freshest quote is older than the staleness limit.</li>" in refusal
    )
    proposal.refresh_from_db()
    assert proposal.state == S.IN_REVIEW
    assert not Decision.objects.filter(proposal=proposal, user=alem.users["committee2"]).exists()
