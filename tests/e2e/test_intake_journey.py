"""An intake in a real browser: seized BNB from the manager's draft, through the deciders'
approvals in their own sessions with their one-time codes and the treasury's receipt, to the
cold multisig on the portfolio page.

The fund is ``FundBuilder``'s (risk review, then two of three on the committee, the ministry
only from USD 1M), with BNB on BNB Smart Chain at a consensus of USD 600.005, a cold multisig
usable now and a seized-assets funding source. The pages are watched for console errors and CSP
violations by the fixtures (``tests/e2e/conftest.py``), and the form and the portfolio page pass
axe's WCAG A/AA rules.
"""

import re
from decimal import Decimal

import pytest

from governance.models import Decision, Execution, Proposal, ProposalState
from portfolio.models import AccountPosition, Asset, CustodyAccount, FundingSource
from tests.e2e.browser import expect, screenshot, sign_in_with_form
from tests.e2e.test_accessibility import violations
from tests.e2e.test_officials_journey import almaty_wall_clock_from, messages
from tests.factories import CustodyAccountFactory, otp_code, otp_device

D = Decimal
S = ProposalState
CHAIN = "BNB Smart Chain"
COLD_ADDRESS = "0x9f3c" + "0" * 32 + "5a7e"
DOCUMENT = "Court decision 2-1234/2025 of the Almaty city court"


@pytest.fixture
def seized_bnb_fund(officials):
    """The officials' fund with BNB on BNB Smart Chain, a cold multisig and a seized-assets
    funding source."""
    alem = officials
    Asset.objects.filter(pk=alem.asset.pk).update(chain=CHAIN)
    alem.cold = CustodyAccountFactory(
        fund=alem.fund,
        name="Cold multisig",
        kind=CustodyAccount.Kind.COLD_MULTISIG,
        chain=CHAIN,
        address=COLD_ADDRESS,
    )
    alem.seized = FundingSource.objects.create(
        fund=alem.fund, name="Court-ordered confiscation", kind=FundingSource.Kind.SEIZED_ASSETS
    )
    return alem


@pytest.mark.browser
def test_seized_bnb_goes_from_the_managers_draft_to_the_cold_multisig_on_the_portfolio(
    seized_bnb_fund, open_page, live_server
):
    alem = seized_bnb_fund
    users = alem.users

    # Given the manager on their queue
    page = open_page(users["manager"])
    page.goto("/")

    # When they draft an intake of 12.5 seized BNB into the cold multisig, on a court decision
    page.get_by_role("link", name="New intake for Alem Crypto Fund").click()
    expect(page.get_by_role("heading", name="Terms: Intake from a funding source")).to_be_visible()
    expect(page.get_by_label("Notional (USD)", exact=True)).to_have_count(0)
    expect(page.get_by_label("Limit price (USD)", exact=True)).to_have_count(0)
    page.get_by_label("Asset", exact=True).select_option(label="BNB")
    page.get_by_label("Quantity (units)", exact=True).fill("12.5")
    page.get_by_label("Custody account", exact=True).select_option(
        label="Cold multisig (Cold multisig wallet, BNB Smart Chain)"
    )
    page.get_by_label("Funding source", exact=True).select_option(
        label="Court-ordered confiscation"
    )
    page.get_by_label("Document reference", exact=True).fill(DOCUMENT)
    page.get_by_label("Rationale", exact=True).fill("BNB confiscated by the court for the reserve.")
    found = violations(page)
    assert not found, "axe found WCAG A/AA violations on the form:\n" + "\n".join(found)
    page.get_by_role("button", name="Save draft").click()
    expect(messages(page)).to_contain_text("Draft saved.")
    pk = int(re.search(r"/proposals/(\d+)/$", page.url).group(1))
    expect(page.locator("h1")).to_have_text(
        f"Proposal #{pk}: intake of 12.5 BNB from Court-ordered confiscation"
    )
    page.get_by_role("button", name="Submit for review").click()

    # Then it is in review, valued at the consensus price: no ministry stage
    expect(messages(page)).to_contain_text("The proposal is submitted")
    proposal = Proposal.objects.get(pk=pk)
    assert (proposal.kind, proposal.state, proposal.notional_usd) == (
        Proposal.Kind.INTAKE,
        S.IN_REVIEW,
        D("7500.07"),
    )

    # When risk and two committee members sign in with their codes and approve it
    for name in ("risk", "committee1", "committee2"):
        user = users[name]
        page = open_page()
        sign_in_with_form(page, name, code=otp_code(user))
        expect(page).to_have_url(f"{live_server.url}/")
        row = page.locator("section[aria-labelledby='waiting-heading'] tbody tr").filter(
            has=page.get_by_role("link", name=f"Proposal #{pk}", exact=True)
        )
        expect(row).to_contain_text("Intake")
        expect(row).to_contain_text("into Cold multisig")
        row.get_by_role("link", name=f"Proposal #{pk}", exact=True).click()
        expect(page.locator(".document-reference")).to_have_text(DOCUMENT)
        form = page.locator("#decision-form")
        form.get_by_label("Approve", exact=True).check()
        form.get_by_label("One-time code", exact=True).fill(otp_code(user))
        form.get_by_role("button", name="Record my decision").click()
        expect(messages(page)).to_have_text("Your approval is recorded.")

    proposal.refresh_from_db()
    assert proposal.state == S.APPROVED

    # When the treasury operator records the receipt, without a price
    treasury = users["treasury"]
    page = open_page()
    sign_in_with_form(page, "treasury", code=otp_code(treasury))
    page.locator("section[aria-labelledby='fills-heading']").get_by_role(
        "link", name=f"Proposal #{pk}", exact=True
    ).click()
    form = page.locator("#fill-form")
    expect(form).to_contain_text("valued at the consensus price at acceptance")
    expect(form.get_by_label("Price (USD per unit)", exact=True)).to_have_count(0)
    received_at = almaty_wall_clock_from(proposal.decided_at)
    form.get_by_label("Quantity", exact=True).fill("12.5")
    form.get_by_label("Network or custodian", exact=True).fill("BNB Smart Chain")
    form.get_by_label("External reference", exact=True).fill("COURT-2-1234-RECEIPT")
    form.get_by_label("Received at (Almaty time)", exact=True).fill(
        received_at.strftime("%Y-%m-%dT%H:%M:%S")
    )
    form.get_by_label("One-time code", exact=True).fill(otp_code(treasury))
    form.get_by_role("button", name="Record the fill").click()
    expect(messages(page)).to_have_text("The fill COURT-2-1234-RECEIPT is booked.")

    # Then the portfolio page shows the 12.5 BNB in the cold multisig
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Alem Crypto Fund", exact=True
    ).click()
    expect(page).to_have_url(f"{live_server.url}/funds/{alem.fund.pk}/")
    cold = page.locator(f"article[aria-labelledby='account-{alem.cold.pk}-heading']")
    expect(cold.get_by_role("heading", name="Cold multisig")).to_be_visible()
    bnb = cold.locator("tbody tr").filter(has=page.get_by_role("rowheader", name="BNB"))
    expect(bnb.locator("td").first).to_have_text("12.5")
    expect(cold.locator(f"[title='{COLD_ADDRESS}']")).to_have_text("0x9f3c…005a7e")
    found = violations(page)
    assert not found, "axe found WCAG A/AA violations on the portfolio:\n" + "\n".join(found)
    screenshot(page, "portfolio-intake")

    # And the database holds exactly that
    proposal.refresh_from_db()
    assert (proposal.state, proposal.executed_quantity) == (S.EXECUTED, D("12.5"))
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.quantity, execution.price_usd, execution.recorded_by) == (
        D("12.5"),
        D("600.005"),
        treasury,
    )
    assert execution.confirmed_by_device == otp_device(treasury).persistent_id
    assert [d.user.username for d in Decision.objects.filter(proposal=proposal)] == [
        "risk",
        "committee1",
        "committee2",
    ]
    position = AccountPosition.objects.get(account=alem.cold, asset=alem.asset)
    assert position.quantity == D("12.5")
