"""Managers' pages: drafting and editing through the form, submitting, withdrawing, and the
refusals in plain words (403 without the role, 404 outside the user's funds, 409 by rule)."""

import re
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.urls import reverse

from governance.models import AuditEvent, Proposal, ProposalState
from governance.vocabulary import REFUSALS
from governance.web_forms import ProposalForm, add_service_errors
from tests.factories import FundBuilder
from tests.web import signed_in


@pytest.fixture
def other():
    """A second fund with its own people; Alem's users hold no role in it."""
    return FundBuilder.alem_like(prefix="other_", asset_symbol="BNB")


def terms(alem, **changes) -> dict:
    return {
        "asset": alem.asset.pk,
        "notional_usd": "250000.50",
        "limit_price_usd": "612.1234567891",
        "funding_source": alem.funding_source.pk,
        "rationale": "Add to the strategic BNB position.",
        **changes,
    }


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def assert_no_inline_code(response) -> None:
    """The page runs under the strict CSP: a header, and no inline script, style or handler."""
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    html = response.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert all("src=" in tag or 'type="application/json"' in tag for tag in scripts), scripts
    assert not re.search(r"<style\b", html)
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


# ---------------------------------------------------------------------------------------------
# Drafting
# ---------------------------------------------------------------------------------------------


def test_manager_drafts_a_proposal_through_the_form(client, alem):
    signed_in(client, alem.users["manager"])
    url = reverse("proposal-new", args=[alem.fund.pk])

    page = client.get(url)
    response = client.post(url, terms(alem))

    assert page.status_code == 200
    assert_no_inline_code(page)
    proposal = Proposal.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("proposal-detail", args=[proposal.pk])
    assert (
        proposal.state,
        proposal.author,
        proposal.asset,
        proposal.notional_usd,
        proposal.limit_price_usd,
        proposal.funding_source,
        proposal.rationale,
    ) == (
        ProposalState.DRAFT,
        alem.users["manager"],
        alem.asset,
        Decimal("250000.50"),
        Decimal("612.1234567891"),
        alem.funding_source,
        "Add to the strategic BNB position.",
    )
    assert AuditEvent.objects.filter(proposal=proposal).get().action == "proposal.created"
    assert messages_of(response) == [
        "Draft saved. Check it, then submit it for review when it is ready."
    ]


def test_the_form_offers_only_the_funds_whitelisted_assets_and_its_funding_sources(
    client, alem, other
):
    from tests.factories import AssetFactory

    AssetFactory(symbol="DOGE")
    signed_in(client, alem.users["manager"])

    form = client.get(reverse("proposal-new", args=[alem.fund.pk])).context["form"]

    assert list(form.fields["asset"].queryset) == [alem.asset]
    assert list(form.fields["funding_source"].queryset) == [alem.funding_source]


def test_more_decimals_than_a_column_holds_is_a_field_error_and_nothing_is_created(client, alem):
    signed_in(client, alem.users["manager"])

    response = client.post(
        reverse("proposal-new", args=[alem.fund.pk]),
        terms(alem, notional_usd="1000.005", limit_price_usd="600.00000000001"),
    )

    assert response.status_code == 400
    assert Proposal.objects.count() == 0
    form = response.context["form"]
    assert form.errors == {
        "notional_usd": ["Enter at most 2 decimal places; amounts are never rounded."],
        "limit_price_usd": ["Enter at most 10 decimal places; amounts are never rounded."],
    }
    html = response.content.decode()
    assert html.count('class="field field--error"') == 2
    assert '<ul class="errorlist" id="id_notional_usd_error">' in html
    # What was typed is shown again, unrounded, and the other fields keep their input.
    assert 'value="1000.005"' in html
    assert 'value="600.00000000001"' in html
    assert "Add to the strategic BNB position." in html
    assert_no_inline_code(response)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Enter an amount greater than zero."),
        ("-5.00", "Enter an amount greater than zero."),
        ("ten", "Enter a number, for example 1234.56."),
        ("123456789012345678901", "Enter at most 20 digits in total."),
    ],
)
def test_a_notional_that_is_not_a_positive_amount_is_refused_beside_the_field(
    client, alem, value, message
):
    signed_in(client, alem.users["manager"])

    response = client.post(
        reverse("proposal-new", args=[alem.fund.pk]), terms(alem, notional_usd=value)
    )

    assert response.status_code == 400
    assert response.context["form"].errors == {"notional_usd": [message]}
    assert Proposal.objects.count() == 0


def test_a_service_validation_error_lands_on_its_field(alem):
    form = ProposalForm(data=terms(alem), fund=alem.fund)
    assert form.is_valid()

    add_service_errors(
        form,
        ValidationError(
            {"funding_source": "This funding source belongs to another fund.", "side": "Bad."}
        ),
    )

    assert form.errors == {
        "funding_source": ["This funding source belongs to another fund."],
        "__all__": ["Bad."],
    }


def test_a_user_without_the_propose_role_is_refused_with_403(client, alem):
    signed_in(client, alem.users["auditor"])
    url = reverse("proposal-new", args=[alem.fund.pk])

    page = client.get(url)
    post = client.post(url, terms(alem))

    assert (page.status_code, post.status_code) == (403, 403)
    assert str(REFUSALS["not_permitted"]) in page.content.decode()
    assert Proposal.objects.count() == 0
    assert_no_inline_code(page)


def test_a_fund_or_proposal_outside_the_users_funds_is_404(client, alem, other):
    theirs = other.proposal()
    signed_in(client, alem.users["manager"])

    assert client.get(reverse("proposal-new", args=[other.fund.pk])).status_code == 404
    assert client.post(reverse("proposal-new", args=[other.fund.pk]), {}).status_code == 404
    assert client.get(reverse("proposal-edit", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("proposal-submit", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("proposal-withdraw", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == ProposalState.DRAFT


def test_pages_need_a_signed_in_user(client, alem):
    response = client.get(reverse("proposal-new", args=[alem.fund.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# ---------------------------------------------------------------------------------------------
# Editing
# ---------------------------------------------------------------------------------------------


def test_the_author_edits_a_draft(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])
    url = reverse("proposal-edit", args=[proposal.pk])

    page = client.get(url)
    response = client.post(url, terms(alem, notional_usd="400000.00", rationale="Smaller."))

    assert page.status_code == 200
    assert 'value="500000.00"' in page.content.decode()
    assert_no_inline_code(page)
    assert response.status_code == 302
    assert response["Location"] == reverse("proposal-detail", args=[proposal.pk])
    proposal.refresh_from_db()
    assert (proposal.notional_usd, proposal.rationale, proposal.state) == (
        Decimal("400000.00"),
        "Smaller.",
        ProposalState.DRAFT,
    )
    event = AuditEvent.objects.filter(proposal=proposal).latest("sequence")
    assert event.action == "proposal.updated"
    assert event.payload["changes"]["notional_usd"] == {"from": "500000.00", "to": "400000.00"}
    assert messages_of(response) == ["Changes saved."]


def test_the_author_edits_a_proposal_returned_for_changes(client, alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk", verdict="request_changes")
    signed_in(client, alem.users["manager"])

    response = client.post(
        reverse("proposal-edit", args=[proposal.pk]), terms(alem, limit_price_usd="640")
    )

    assert response.status_code == 302
    proposal.refresh_from_db()
    assert (proposal.state, proposal.limit_price_usd) == (
        ProposalState.CHANGES_REQUESTED,
        Decimal("640"),
    )


def test_a_proposal_in_review_cannot_be_edited_409(client, alem):
    proposal = alem.proposal(submit=True)
    signed_in(client, alem.users["manager"])
    url = reverse("proposal-edit", args=[proposal.pk])
    events_before = AuditEvent.objects.count()

    page = client.get(url)
    post = client.post(url, terms(alem, notional_usd="1.00"))

    assert (page.status_code, post.status_code) == (409, 409)
    assert str(REFUSALS["invalid_state"]) in page.content.decode()
    assert "invalid_state" in page.content.decode()
    proposal.refresh_from_db()
    assert (proposal.notional_usd, proposal.state) == (
        Decimal("500000.00"),
        ProposalState.IN_REVIEW,
    )
    assert AuditEvent.objects.count() == events_before
    assert_no_inline_code(page)


def test_another_manager_cannot_edit_the_authors_draft_403(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager2"])

    response = client.post(
        reverse("proposal-edit", args=[proposal.pk]), terms(alem, notional_usd="1.00")
    )

    assert response.status_code == 403
    proposal.refresh_from_db()
    assert proposal.notional_usd == Decimal("500000.00")


# ---------------------------------------------------------------------------------------------
# Submitting and withdrawing
# ---------------------------------------------------------------------------------------------


def test_the_author_submits_and_a_warning_is_shown_as_a_message(client, alem):
    # 4.6M of a 5M single-proposal limit: past the 90% warning mark, not over it.
    proposal = alem.proposal(notional_usd=Decimal("4600000.00"))
    signed_in(client, alem.users["manager"])

    response = client.post(reverse("proposal-submit", args=[proposal.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("proposal-detail", args=[proposal.pk])
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.IN_REVIEW
    assert messages_of(response) == [
        "The proposal is submitted and waits for its first review.",
        "Compliance warning, Single-proposal limit: The notional of USD 4,600,000.00 is close "
        "to the single-proposal limit of USD 5,000,000.00.",
    ]


def test_a_compliance_block_is_shown_with_the_checks_that_block_409(client, alem):
    proposal = alem.proposal(notional_usd=Decimal("6000000.00"))
    signed_in(client, alem.users["manager"])

    response = client.post(reverse("proposal-submit", args=[proposal.pk]))

    assert response.status_code == 409
    assert response.context["code"] == "compliance_blocked"
    assert [
        (check["rule"], check["label"], check["sentence"])
        for check in response.context["blocking_checks"]
    ] == [
        (
            "single_proposal_limit",
            "Single-proposal limit",
            "The notional of USD 6,000,000.00 exceeds the single-proposal limit of "
            "USD 5,000,000.00.",
        )
    ]
    html = response.content.decode()
    assert str(REFUSALS["compliance_blocked"]) in html
    assert "Single-proposal limit" in html
    assert reverse("proposal-edit", args=[proposal.pk]) in html
    proposal.refresh_from_db()
    assert (proposal.state, proposal.version) == (ProposalState.DRAFT, 1)
    assert AuditEvent.objects.latest("sequence").action == "proposal.submit_refused"
    assert_no_inline_code(response)


def test_submitting_needs_post(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])

    response = client.get(reverse("proposal-submit", args=[proposal.pk]))

    assert response.status_code == 405
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.DRAFT


def test_only_the_author_submits_403(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager2"])

    response = client.post(reverse("proposal-submit", args=[proposal.pk]))

    assert response.status_code == 403
    assert str(REFUSALS["not_permitted"]) in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.DRAFT


def test_the_author_withdraws_with_a_reason(client, alem):
    proposal = alem.proposal(submit=True)
    signed_in(client, alem.users["manager"])

    response = client.post(
        reverse("proposal-withdraw", args=[proposal.pk]), {"reason": "Market moved."}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("proposal-detail", args=[proposal.pk])
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage) == (ProposalState.WITHDRAWN, None)
    event = AuditEvent.objects.latest("sequence")
    assert (event.action, event.payload["reason"]) == ("proposal.withdrawn", "Market moved.")
    assert messages_of(response) == ["The proposal is withdrawn. It stays in the record."]


def test_withdrawing_a_withdrawn_proposal_is_refused_409(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])
    client.post(reverse("proposal-withdraw", args=[proposal.pk]))
    events_before = AuditEvent.objects.count()

    response = client.post(reverse("proposal-withdraw", args=[proposal.pk]))

    assert response.status_code == 409
    assert str(REFUSALS["invalid_state"]) in response.content.decode()
    assert AuditEvent.objects.count() == events_before


def test_a_reason_too_long_is_refused_and_nothing_changes(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])

    response = client.post(reverse("proposal-withdraw", args=[proposal.pk]), {"reason": "x" * 2001})

    assert response.status_code == 400
    assert "Ensure this value has at most 2000 characters" in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.DRAFT


def test_the_edit_page_offers_a_withdraw_button(client, alem):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])

    html = client.get(reverse("proposal-edit", args=[proposal.pk])).content.decode()

    assert f'action="{reverse("proposal-withdraw", args=[proposal.pk])}"' in html
    assert "Withdraw proposal" in html


def test_a_russian_reader_types_amounts_with_a_decimal_comma(client, alem, settings):
    proposal = alem.proposal()
    signed_in(client, alem.users["manager"])
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"
    url = reverse("proposal-edit", args=[proposal.pk])

    page = client.get(url)
    response = client.post(url, terms(alem, notional_usd="400000,25", limit_price_usd="612,5"))

    assert 'value="500000,00"' in page.content.decode()
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert (proposal.notional_usd, proposal.limit_price_usd) == (
        Decimal("400000.25"),
        Decimal("612.5"),
    )
