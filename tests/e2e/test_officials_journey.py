"""The officials' web app in a real browser: a purchase from draft to portfolio, and the ways
the pages refuse, explain and stay usable by keyboard and on a tablet.

The fund of ``FundBuilder`` runs risk review (1), investment committee (2 of 3) and ministry
sign-off from USD 1M; it holds USD 25M and prices BNB at a consensus of USD 600.005. People sign
in with ``PASSWORD``; deciders and the treasury operator have an authenticator
(``officials``), and ``otp_code(user)`` is the code it shows now (called right before typing).
Tests about something other than signing in start from a session cookie (``open_page(user)``).
Every page is also checked by the fixtures for console errors, CSP violations and the CSP header.
"""

import base64
import datetime as dt
import re
import time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from django_otp.oath import TOTP, hotp
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import services
from governance.models import AuditEvent, Decision, Execution, Proposal, ProposalState
from governance.views.review import DECISION_NOTES
from governance.vocabulary import REFUSALS
from portfolio.models import FundRole
from tests.e2e.browser import PASSWORD, TABLET, expect, screenshot, sign_in_with_form
from tests.factories import FundBuilder, otp_code, otp_device

D = Decimal
S = ProposalState
ALMATY = ZoneInfo("Asia/Almaty")
SIGN_IN_REFUSED = "The username, password or code is wrong. Check them and try again."


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def messages(page):
    return page.locator("ul.messages")


def waiting_for_decision(page):
    return page.locator("section[aria-labelledby='waiting-heading']")


def proposal_url(proposal_or_pk) -> str:
    return f"/proposals/{getattr(proposal_or_pk, 'pk', proposal_or_pk)}/"


def wrong_code(user) -> str:
    """A six-digit code the user's device refuses: none of the steps around now makes it."""
    device = otp_device(user)
    now = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).t()
    accepted = {hotp(device.bin_key, now + offset, device.digits) for offset in range(-3, 4)}
    return f"{next(n for n in range(123456, 999999) if n not in accepted):06d}"


def almaty_wall_clock_from(moment: dt.datetime) -> dt.datetime:
    """Now on an Almaty wall clock to the second (as a datetime-local input holds it), but
    never before ``moment``: the service refuses a fill executed before the approval."""
    while True:
        now = timezone.now().astimezone(ALMATY).replace(microsecond=0)
        if now >= moment:
            return now
        time.sleep(0.05)  # the approval was in this same second; the next one comes soon


def decisions_of(proposal) -> list[tuple[str, str, int, str]]:
    return [
        (d.user.username, d.verdict, d.stage.order, d.comment)
        for d in Decision.objects.filter(proposal=proposal).order_by("created_at", "pk")
    ]


def horizontal_overflow(page) -> dict:
    """How far the page is wider than the window, and the widest elements that stick out."""
    return page.evaluate(
        """() => {
            const width = window.innerWidth;
            const culprits = [...document.querySelectorAll("body *")]
              .filter((el) => el.getBoundingClientRect().right > width + 0.5)
              .slice(0, 8)
              .map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
                + (el.className && typeof el.className === "string"
                   ? "." + el.className.trim().split(/\\s+/).join(".") : "")
                + " right=" + Math.round(el.getBoundingClientRect().right));
            return {
              scrollWidth: document.documentElement.scrollWidth,
              innerWidth: width,
              culprits,
            };
        }"""
    )


# ---------------------------------------------------------------------------------------------
# 1. The whole journey
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_purchase_goes_from_the_managers_draft_through_every_stage_to_the_portfolio(
    officials, open_page, live_server, mailoutbox
):
    alem = officials
    users = alem.users

    # Given the manager, who holds no deciding role, signs in with a password alone
    page = open_page()
    sign_in_with_form(page, "manager")
    expect(page).to_have_url(f"{live_server.url}/")

    # When they draft a purchase of USD 2,000,000.00 of BNB at a limit of USD 650 and submit it
    page.get_by_role("link", name="New purchase for Alem Crypto Fund").click()
    page.get_by_label("Asset", exact=True).select_option(label="BNB")
    page.get_by_label("Notional (USD)", exact=True).fill("2000000.00")
    page.get_by_label("Limit price (USD)", exact=True).fill("650")
    page.get_by_label("Funding source", exact=True).select_option(
        label="Republican budget allocation"
    )
    page.get_by_label("Rationale", exact=True).fill("Build the strategic BNB position.")
    page.get_by_role("button", name="Save draft").click()
    expect(messages(page)).to_contain_text("Draft saved.")
    pk = int(re.search(r"/proposals/(\d+)/$", page.url).group(1))
    page.get_by_role("button", name="Submit for review").click()

    # Then it is in review at the risk stage, and the risk officer was told
    expect(messages(page)).to_contain_text(
        "The proposal is submitted and waits for its first review."
    )
    proposal = Proposal.objects.get(pk=pk)
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 1)
    assert (proposal.notional_usd, proposal.limit_price_usd) == (D("2000000.00"), D("650"))
    assert [m.to for m in mailoutbox] == [["risk@alem.example"]]

    # When each stage's deciders sign in with a code, open it from their queue and approve it
    for name in ("risk", "committee1", "committee2", "ministry"):
        user = users[name]
        page = open_page()
        sign_in_with_form(page, name, code=otp_code(user))
        expect(page).to_have_url(f"{live_server.url}/")
        if name == "risk":
            screenshot(page, "queue")
        waiting_for_decision(page).get_by_role("link", name=f"Proposal #{pk}", exact=True).click()
        expect(page).to_have_url(f"{live_server.url}{proposal_url(pk)}")
        form = page.locator("#decision-form")
        form.get_by_label("Approve", exact=True).check()
        form.get_by_label("Comment", exact=True).fill(f"Approved by {name}.")
        form.get_by_label("One-time code", exact=True).fill(otp_code(user))
        if name == "risk":
            screenshot(page, "proposal-decision-form")
        form.get_by_role("button", name="Record my decision").click()
        expect(messages(page)).to_have_text("Your approval is recorded.")
        expect(page.locator("#decision-form")).to_have_count(0)

    # Then the proposal is approved, and every stage's deciders were told in turn
    proposal.refresh_from_db()
    assert proposal.state == S.APPROVED
    assert sorted(m.to[0] for m in mailoutbox) == [
        "committee1@alem.example",
        "committee2@alem.example",
        "committee3@alem.example",
        "ministry@alem.example",
        "risk@alem.example",
    ]

    # When the treasury operator signs in with a code and records a fill that closes it
    treasury = users["treasury"]
    page = open_page()
    sign_in_with_form(page, "treasury", code=otp_code(treasury))
    page.locator("section[aria-labelledby='fills-heading']").get_by_role(
        "link", name=f"Proposal #{pk}", exact=True
    ).click()
    executed_at = almaty_wall_clock_from(proposal.decided_at)
    form = page.locator("#fill-form")
    form.get_by_label("Quantity", exact=True).fill("100")
    form.get_by_label("Price (USD per unit)", exact=True).fill("600.00")
    form.get_by_label("Fee (USD)", exact=True).fill("1.25")
    form.get_by_label("Venue", exact=True).fill("Binance")
    form.get_by_label("External reference", exact=True).fill("BINANCE-ORDER-0001")
    form.get_by_label("Executed at (Almaty time)", exact=True).fill(
        executed_at.strftime("%Y-%m-%dT%H:%M:%S")
    )
    form.get_by_label(re.compile("Close the proposal with this fill")).check()
    form.get_by_label("One-time code", exact=True).fill(otp_code(treasury))
    form.get_by_role("button", name="Record the fill").click()
    expect(messages(page)).to_have_text("The fill BINANCE-ORDER-0001 is booked.")

    # Then the fund's portfolio holds 100 BNB and draws its allocation chart
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Alem Crypto Fund", exact=True
    ).click()
    expect(page).to_have_url(f"{live_server.url}/funds/{alem.fund.pk}/")
    bnb = page.locator("section[aria-labelledby='positions-heading'] tbody tr").filter(
        has=page.get_by_role("rowheader", name="BNB", exact=True)
    )
    expect(bnb.locator("td").first).to_have_text("100")
    expect(page.locator(".chart[data-source='allocation-data'] svg")).to_be_visible()
    assert page.locator(".chart svg").count() >= 1
    screenshot(page, "portfolio")

    # And the auditor, asking for a verification now, sees an intact chain with every step
    page = open_page(users["auditor"])
    page.goto("/audit/")
    expect(page.locator("#chain-status")).to_contain_text("not been verified yet")
    page.get_by_role("button", name="Verify now").click()
    expect(messages(page)).to_contain_text("verification is queued")
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")
    actions = page.locator(".audit-table tbody .audit-action")
    expect(actions.filter(has_text=re.compile("^Decision recorded$"))).to_have_count(4)
    expect(actions.filter(has_text=re.compile("^Execution recorded$"))).to_have_count(1)
    screenshot(page, "audit-log")

    # And the database holds exactly that
    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED
    assert proposal.executed_notional_usd == D("60001.25")
    assert decisions_of(proposal) == [
        ("risk", "approve", 1, "Approved by risk."),
        ("committee1", "approve", 2, "Approved by committee1."),
        ("committee2", "approve", 2, "Approved by committee2."),
        ("ministry", "approve", 3, "Approved by ministry."),
    ]
    for decision in Decision.objects.filter(proposal=proposal).select_related("user"):
        assert decision.confirmed_by_device == otp_device(decision.user).persistent_id
    execution = Execution.objects.get(proposal=proposal)
    assert (
        execution.quantity,
        execution.price_usd,
        execution.fee_usd,
        execution.venue,
        execution.external_ref,
        execution.executed_at,
        execution.recorded_by,
        execution.confirmed_by_device,
    ) == (
        D("100"),
        D("600.00"),
        D("1.25"),
        "Binance",
        "BINANCE-ORDER-0001",
        executed_at,
        treasury,
        otp_device(treasury).persistent_id,
    )


# ---------------------------------------------------------------------------------------------
# 2. Segregation of duties on the page
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(
    "extra_role", [None, FundRole.REVIEW_RISK], ids=["manager", "manager-also-risk-officer"]
)
def test_the_author_sees_no_decision_form_on_their_own_proposal(officials, open_page, extra_role):
    # Given the manager's own proposal at the risk stage, the manager perhaps a risk officer too
    alem = officials
    manager = alem.users["manager"]
    if extra_role:
        services.role_grant(user=manager, fund=alem.fund, role=extra_role)
    proposal = alem.proposal(submit=True)

    # When they open it
    page = open_page(manager)
    page.goto(proposal_url(proposal))

    # Then there is nothing to decide with, and the page says why
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Proposal #{proposal.pk}")
    expect(page.locator("#decision-form")).to_have_count(0)
    expect(page.get_by_role("radio")).to_have_count(0)
    expect(page.get_by_label("One-time code")).to_have_count(0)
    expect(page.locator(".decision-note")).to_have_text(
        str(DECISION_NOTES["segregation_of_duties"])
    )


# ---------------------------------------------------------------------------------------------
# 3. A wrong one-time code
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_wrong_code_is_refused_in_plain_words_and_records_no_decision(
    officials, open_page, page_log
):
    # Given a proposal at the risk stage, open on the risk officer's screen
    alem = officials
    risk = alem.users["risk"]
    proposal = alem.proposal(submit=True)
    page_log.allow_http_error(403)  # the refusal page answers 403, as the API would
    page = open_page(risk)
    page.goto(proposal_url(proposal))

    # When they approve with a code their authenticator does not show
    form = page.locator("#decision-form")
    form.get_by_label("Approve", exact=True).check()
    form.get_by_label("Comment", exact=True).fill("Within the mandate.")
    form.get_by_label("One-time code", exact=True).fill(wrong_code(risk))
    form.get_by_role("button", name="Record my decision").click()

    # Then the page says so in plain words, keeps what they typed but the code
    refusal = page.get_by_role("alert").filter(has_text="Refused. Nothing was recorded.")
    expect(refusal).to_contain_text(str(REFUSALS["second_factor_invalid"]))
    expect(refusal).to_contain_text("second_factor_invalid")
    expect(form.get_by_label("Comment", exact=True)).to_have_value("Within the mandate.")
    expect(form.get_by_label("One-time code", exact=True)).to_have_value("")
    # And nothing was decided: only the refusal is in the audit log
    proposal.refresh_from_db()
    assert Decision.objects.filter(proposal=proposal).count() == 0
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 1)
    last = AuditEvent.objects.order_by("-sequence").first()
    assert (last.action, last.actor, last.payload["code"]) == (
        "decision.refused",
        risk,
        "second_factor_invalid",
    )

    # When they try again with the code their authenticator shows now
    form.get_by_label("Approve", exact=True).check()
    form.get_by_label("One-time code", exact=True).fill(otp_code(risk))
    form.get_by_role("button", name="Record my decision").click()

    # Then the approval is recorded and the committee's stage opens
    expect(messages(page)).to_have_text("Your approval is recorded.")
    proposal.refresh_from_db()
    assert decisions_of(proposal) == [("risk", "approve", 1, "Within the mandate.")]
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 2)


# ---------------------------------------------------------------------------------------------
# 4. Another fund's people
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_manager_of_another_fund_gets_not_found_for_this_funds_pages(
    officials, open_page, page_log
):
    # Given a proposal of this fund, and the manager of another fund
    alem = officials
    proposal = alem.proposal(submit=True)
    other = FundBuilder.alem_like(prefix="other_")
    page_log.allow_http_error(404)
    page = open_page(other.users["manager"])

    # When they open this fund's proposal and portfolio
    for url in (proposal_url(proposal), f"/funds/{alem.fund.pk}/"):
        response = page.goto(url)

        # Then both are "not found", showing nothing of this fund
        assert response.status == 404, url
        expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        expect(page.locator("main")).not_to_contain_text("Alem Crypto Fund")
        expect(page.locator("main")).not_to_contain_text("BNB")

    # And their own fund's portfolio opens as usual
    assert page.goto(f"/funds/{other.fund.pk}/").status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("other_Alem Crypto Fund")


# ---------------------------------------------------------------------------------------------
# 5. Signing in and enrolling an authenticator
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(
    ("username", "password", "with_code"),
    [
        ("manager", "not-the-password", False),
        ("nobody", PASSWORD, False),
        ("risk", PASSWORD, True),
    ],
    ids=["wrong-password", "unknown-username", "right-password-wrong-code"],
)
def test_a_failed_sign_in_says_the_same_generic_sentence(
    officials, page, username, password, with_code
):
    # Given the sign-in page
    page.goto("/accounts/login/")
    if username == "manager":
        screenshot(page, "login")

    # When someone signs in with a wrong password, an unknown name or a wrong code
    code = wrong_code(officials.users[username]) if with_code else ""
    sign_in_with_form(page, username, password=password, code=code)

    # Then the page says only that something was wrong, and they are not signed in
    expect(page.get_by_role("alert")).to_have_text(SIGN_IN_REFUSED)
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


@pytest.mark.browser
def test_a_risk_officer_without_an_authenticator_enrols_one_from_the_qr_page(alem, page):
    # Given a risk officer who has never set up an authenticator
    risk = alem.users["risk"]
    risk.set_password(PASSWORD)
    risk.save(update_fields=["password"])

    # When they sign in with their password alone
    sign_in_with_form(page, "risk")

    # Then they are sent to set one up, with a QR code the page's policy lets the browser show
    expect(page).to_have_url(re.compile(r"/accounts/two-factor/$"))
    qr_code = page.get_by_role(
        "img", name="QR code that adds your Alem account to an authenticator app"
    )
    expect(qr_code).to_be_visible()
    assert qr_code.evaluate("img => img.complete && img.naturalWidth > 0")
    screenshot(page, "enrol-authenticator")

    # When they type the code an authenticator makes from the key shown for manual entry
    secret = page.locator(".otp-secret").inner_text().replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    page.get_by_label("Code from your authenticator app", exact=True).fill(
        f"{TOTP(key).token():06d}"
    )
    page.get_by_role("button", name="Confirm and continue").click()

    # Then the device is confirmed and they reach their queue
    expect(messages(page)).to_contain_text("Your authenticator is set up.")
    expect(page.get_by_role("heading", level=1)).to_have_text("My queue")
    assert list(TOTPDevice.objects.filter(user=risk).values_list("confirmed", flat=True)) == [True]


# ---------------------------------------------------------------------------------------------
# 6. Keyboard and accessible names
# ---------------------------------------------------------------------------------------------


def focused(page) -> str:
    """The focused element: its id, or a button's name."""
    return page.evaluate(
        """() => {
            const el = document.activeElement;
            if (!el || el === document.body) return "";
            return el.id || (el.tagName.toLowerCase() + ":" + el.textContent.trim());
        }"""
    )


@pytest.mark.browser
def test_the_decision_form_is_named_for_screen_readers_and_works_by_keyboard_alone(
    officials, open_page
):
    # Given a proposal at the risk stage, open on the risk officer's screen
    alem = officials
    risk = alem.users["risk"]
    proposal = alem.proposal(submit=True)
    page = open_page(risk)
    page.goto(proposal_url(proposal))

    # Then every control of the decision form has an accessible name
    form = page.locator("#decision-form")
    expect(form.get_by_role("group", name="Your decision")).to_be_visible()
    for verdict in ("Approve", "Reject", "Request changes"):
        expect(form.get_by_role("radio", name=verdict, exact=True)).to_have_count(1)
        expect(page.get_by_label(verdict, exact=True)).to_have_count(1)
    expect(page.get_by_label("Comment", exact=True)).to_have_count(1)
    expect(page.get_by_label("One-time code", exact=True)).to_have_count(1)
    expect(form.get_by_role("button", name="Record my decision")).to_have_count(1)

    # When they Tab from the top of the page to the first verdict
    for _ in range(200):
        page.keyboard.press("Tab")
        if focused(page) == "id_verdict_0":
            break
    else:
        pytest.fail("Tab never reached the decision form's first verdict.")

    # And choose it, write a comment and the code, and submit, by keyboard alone
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused(page) == "id_comment"
    page.keyboard.type("Checked the price sources.")
    page.keyboard.press("Tab")
    assert focused(page) == "id_otp_token"
    page.keyboard.type(otp_code(risk))
    page.keyboard.press("Tab")
    assert focused(page) == "button:Record my decision"
    page.keyboard.press("Enter")

    # Then the approval is recorded
    expect(messages(page)).to_have_text("Your approval is recorded.")
    assert decisions_of(proposal) == [("risk", "approve", 1, "Checked the price sources.")]


# ---------------------------------------------------------------------------------------------
# 7. New items without reloading
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_queue_shows_a_proposal_submitted_while_it_is_open_without_reloading(
    officials, open_page, settings
):
    # Given the risk officer's queue is open with nothing waiting, polling every second
    settings.ALEM_QUEUE_POLL_SECONDS = 1
    alem = officials
    page = open_page(alem.users["risk"])
    page.goto("/")
    expect(waiting_for_decision(page).get_by_role("link")).to_have_count(0)
    page.evaluate("window.openedOnce = true")

    # When the manager submits a proposal
    proposal = alem.proposal(submit=True)

    # Then it appears in the queue and the live region says so, in the same document
    link = waiting_for_decision(page).get_by_role("link", name=f"Proposal #{proposal.pk}")
    expect(link).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("1 new item waits for you.")
    assert page.evaluate("window.openedOnce") is True
    link.click()
    expect(page.locator("#decision-form")).to_be_visible()


# ---------------------------------------------------------------------------------------------
# 8. Tablet width
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_pages_fit_a_tablet_held_upright_without_scrolling_sideways(busy_fund, open_page):
    # Given a fund with work in progress, and its people on tablets 768 pixels wide
    alem, waiting, filled = busy_fund
    pages = {
        "queue": ("risk", "/"),
        "proposal-decision-form": ("risk", proposal_url(waiting)),
        "proposal-fill-form": ("treasury", proposal_url(filled)),
        "portfolio": ("risk", f"/funds/{alem.fund.pk}/"),
        "audit-log": ("auditor", "/audit/"),
    }
    tablets = {}
    overflowing = {}
    for name, (username, url) in pages.items():
        if username not in tablets:
            tablets[username] = open_page(alem.users[username], viewport=TABLET)
        page = tablets[username]

        # When each page opens
        response = page.goto(url)
        assert response.status == 200, name
        screenshot(page, f"tablet-{name}")

        # Then nothing on it is wider than the window
        overflow = horizontal_overflow(page)
        if overflow["scrollWidth"] > overflow["innerWidth"]:
            overflowing[name] = overflow
    assert overflowing == {}
