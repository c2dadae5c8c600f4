"""The pages for every kind of operation (rule 15): the proposal form asks for what the kind
needs, the proposal page and the queue show the kind, quantity, accounts and document, and the
treasury records each kind's fill through the page.

The fund is ``FundBuilder``'s, with BNB on BNB Smart Chain, a cold multisig holding 100 BNB
bought at USD 500 (an opening balance), an exchange account holding none and a seized-assets
funding source, as in ``test_operations``.
"""

import datetime as dt
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from governance import services
from governance.models import Execution, Proposal, ProposalState
from portfolio.models import (
    AccountPosition,
    CustodyAccount,
    LedgerEntry,
    Price,
)
from tests.factories import (
    CustodyAccountFactory,
    FundBuilder,
    PriceFactory,
    otp_code,
)
from tests.governance.test_views_review import assert_strict_page, get_page
from tests.web import signed_in

D = Decimal
K = Proposal.Kind
S = ProposalState
CHAIN = "BNB Smart Chain"
ALMATY = ZoneInfo("Asia/Almaty")

# The fields of the form of each kind, in order (``operations.TERMS`` and the rationale).
FORM_FIELDS = {
    K.BUY: ["asset", "notional_usd", "limit_price_usd", "account", "funding_source", "rationale"],
    K.SELL: ["asset", "limit_price_usd", "quantity", "account", "rationale"],
    K.TRANSFER: ["asset", "quantity", "account", "destination_account", "rationale"],
    K.INTAKE: [
        "asset",
        "quantity",
        "account",
        "funding_source",
        "document_reference",
        "rationale",
    ],
}
FILL_FIELDS = {
    K.SELL: ["quantity", "price_usd", "fee_usd", "venue", "external_ref", "executed_at"],
    K.TRANSFER: ["quantity", "fee_quantity", "venue", "external_ref", "executed_at"],
    K.INTAKE: ["quantity", "venue", "external_ref", "executed_at"],
}
COMMON_FILL_FIELDS = ["tx_hash", "close", "otp_token"]


@pytest.fixture
def fund(alem: FundBuilder) -> FundBuilder:
    """The Alem-like fund with 100 BNB in a cold multisig and an empty exchange account."""
    return alem.with_custody_accounts()


def new_url(fund: FundBuilder, kind: str) -> str:
    return f"{reverse('proposal-new', args=[fund.fund.pk])}?kind={kind}"


def intake_terms(fund: FundBuilder, **changes) -> dict:
    return {
        "asset": fund.asset.pk,
        "quantity": "12.5",
        "account": fund.cold.pk,
        "funding_source": fund.seized.pk,
        "document_reference": "Court decision 2-1234/2025",
        "rationale": "BNB confiscated by the court, handed to the reserve.",
        **changes,
    }


def field_error(html: str, name: str) -> str:
    """The text of the error list beside field ``name``, or ''."""
    match = re.search(rf'<ul class="errorlist" id="id_{name}_error">(.*?)</ul>', html, re.S)
    return re.sub(r"<[^>]+>", "", match.group(1)) if match else ""


def approved(fund: FundBuilder, kind: str, **terms) -> Proposal:
    """A proposal of ``kind`` approved an hour ago, with both sources pricing BNB a minute ago:
    a fill timed to the second, as the form sends it, is after the approval and priced."""
    values = {"rationale": f"A {kind} for the reserve.", "asset": fund.asset, **terms}
    proposal = services.proposal_create(
        author=fund.users["manager"], fund=fund.fund, kind=kind, **values
    )
    services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])
    proposal = fund.approve_fully(proposal)
    assert proposal.state == S.APPROVED, proposal.compliance
    now = timezone.now()
    Proposal.objects.filter(pk=proposal.pk).update(decided_at=now - dt.timedelta(hours=1))
    for source, price in ((Price.Source.BINANCE, "600"), (Price.Source.COINGECKO, "600.01")):
        PriceFactory(
            asset=fund.asset,
            source=source,
            price=D(price),
            observed_at=now - dt.timedelta(minutes=1),
        )
    proposal.refresh_from_db()
    return proposal


def fill_data(fund: FundBuilder, **fields) -> dict:
    executed_at = timezone.now().astimezone(ALMATY).replace(microsecond=0)
    return {
        "venue": "On chain",
        "executed_at": executed_at.strftime("%Y-%m-%dT%H:%M:%S"),
        "otp_token": otp_code(fund.users["treasury"]),
        **fields,
    }


def held(account) -> Decimal:
    position = AccountPosition.objects.filter(account=account).first()
    return position.quantity if position else D("0")


# ---------------------------------------------------------------------------------------------
# The proposal form, by kind
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FORM_FIELDS))
def test_the_form_of_each_kind_asks_only_for_that_kinds_terms(client, fund, kind):
    signed_in(client, fund.users["manager"])

    response = client.get(new_url(fund, kind))

    html = assert_strict_page(response)
    assert response.status_code == 200
    assert list(response.context["form"].fields) == FORM_FIELDS[kind]
    names = re.findall(r'<(?:input|select|textarea)[^>]* name="(\w+)"', html.split("<main")[1])
    form_names = [n for n in names if n not in ("csrfmiddlewaretoken", "reason")]
    assert form_names == FORM_FIELDS[kind]
    # The other kinds are one link away, the current one marked.
    assert re.search(rf'<a href="[^"]*\?kind={kind}" aria-current="page">', html)
    assert len(re.findall(r'<a href="[^"]*/proposals/new/\?kind=\w+"', html)) == 4


def test_a_new_proposal_without_a_kind_is_a_buy_and_an_unknown_kind_is_not_found(client, fund):
    signed_in(client, fund.users["manager"])
    url = reverse("proposal-new", args=[fund.fund.pk])

    assert list(client.get(url).context["form"].fields) == FORM_FIELDS[K.BUY]
    assert client.get(f"{url}?kind=swap").status_code == 404
    assert client.post(f"{url}?kind=swap", intake_terms(fund)).status_code == 404
    assert not Proposal.objects.exists()


def test_the_account_choices_are_the_funds_active_accounts_with_their_cooling_off(
    client, fund, other_fund
):
    cooling = CustodyAccountFactory(
        fund=fund.fund,
        name="New custodian",
        kind=CustodyAccount.Kind.QUALIFIED_CUSTODIAN,
        usable_from=timezone.now() + dt.timedelta(hours=20),
    )
    CustodyAccountFactory(fund=fund.fund, name="Retired", active=False, removed_at=timezone.now())
    CustodyAccountFactory(fund=other_fund.fund, name="Theirs")
    signed_in(client, fund.users["manager"])

    response = client.get(new_url(fund, K.TRANSFER))

    form = response.context["form"]
    for name in ("account", "destination_account"):
        assert list(form.fields[name].queryset) == [fund.cold, fund.exchange, cooling]
    html = response.content.decode()
    assert "Cold multisig (Cold multisig wallet, BNB Smart Chain)" in html
    assert "Exchange (Exchange account, BNB Smart Chain)" in html
    until = timezone.localtime(cooling.usable_from).strftime("%Y")
    assert re.search(
        rf"New custodian \(Qualified custodian, BNB Smart Chain\), cooling off until [^<]*{until}",
        html,
    )
    assert "Retired" not in html and "Theirs" not in html


def test_an_intake_asset_may_be_left_empty_for_us_dollars(client, fund):
    signed_in(client, fund.users["manager"])

    html = get_page(client, new_url(fund, K.INTAKE))

    assert '<option value="" selected>US dollars</option>' in html
    assert list(fund.fund.funding_sources.order_by("name")) == list(
        client.get(new_url(fund, K.INTAKE)).context["form"].fields["funding_source"].queryset
    )


def test_manager_drafts_an_intake_of_seized_bnb_through_the_form(client, fund):
    signed_in(client, fund.users["manager"])

    response = client.post(new_url(fund, K.INTAKE), intake_terms(fund))

    proposal = Proposal.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("proposal-detail", args=[proposal.pk])
    assert (
        proposal.kind,
        proposal.asset,
        proposal.quantity,
        proposal.account,
        proposal.funding_source,
        proposal.document_reference,
        proposal.limit_price_usd,
    ) == (
        K.INTAKE,
        fund.asset,
        D("12.5"),
        fund.cold,
        fund.seized,
        "Court decision 2-1234/2025",
        None,
    )
    # Valued by the service at the consensus price of USD 600.005, rounded up to the cent.
    assert proposal.notional_usd == D("7500.07")


@pytest.mark.parametrize(
    ("kind", "posted", "expected"),
    [
        (
            K.SELL,
            {"quantity": "40", "limit_price_usd": "590", "account": "cold"},
            {"quantity": D("40"), "limit_price_usd": D("590"), "account": "cold"},
        ),
        (
            K.TRANSFER,
            {"quantity": "10", "account": "cold", "destination_account": "exchange"},
            {"quantity": D("10"), "account": "cold", "destination_account": "exchange"},
        ),
    ],
    ids=["sale", "transfer"],
)
def test_manager_drafts_a_sale_and_a_transfer_through_the_form(
    client, fund, kind, posted, expected
):
    accounts = {"cold": fund.cold, "exchange": fund.exchange}
    data = {"asset": fund.asset.pk, "rationale": "Rebalance.", **posted}
    data = {k: accounts[v].pk if v in accounts else v for k, v in data.items()}
    signed_in(client, fund.users["manager"])

    response = client.post(new_url(fund, kind), data)

    assert response.status_code == 302
    proposal = Proposal.objects.get()
    assert proposal.kind == kind
    expected = {k: accounts.get(v, v) if isinstance(v, str) else v for k, v in expected.items()}
    assert {name: getattr(proposal, name) for name in expected} == expected


def test_an_intake_of_coins_without_its_account_is_refused_beside_the_account(client, fund):
    signed_in(client, fund.users["manager"])

    response = client.post(new_url(fund, K.INTAKE), intake_terms(fund, account=""))

    assert response.status_code == 400
    html = assert_strict_page(response)
    assert field_error(html, "account") == (
        "An intake of coins names the custody account they go to."
    )
    assert "Nothing was saved. Correct the fields marked below." in html
    assert not Proposal.objects.exists()


def test_a_transfer_to_the_account_it_leaves_is_refused_beside_the_destination(client, fund):
    signed_in(client, fund.users["manager"])

    response = client.post(
        new_url(fund, K.TRANSFER),
        {
            "asset": fund.asset.pk,
            "quantity": "5",
            "account": fund.cold.pk,
            "destination_account": fund.cold.pk,
            "rationale": "Nowhere.",
        },
    )

    assert response.status_code == 400
    assert field_error(response.content.decode(), "destination_account") == (
        "A transfer goes to another account."
    )
    assert not Proposal.objects.exists()


def test_a_required_term_of_the_kind_left_empty_is_refused_beside_it(client, fund):
    signed_in(client, fund.users["manager"])

    response = client.post(new_url(fund, K.INTAKE), intake_terms(fund, document_reference=""))

    assert response.status_code == 400
    assert field_error(response.content.decode(), "document_reference") == (
        "This field is required."
    )
    assert not Proposal.objects.exists()


def test_editing_a_draft_keeps_its_kind(client, fund):
    proposal = services.proposal_create(
        author=fund.users["manager"],
        fund=fund.fund,
        kind=K.SELL,
        asset=fund.asset,
        quantity=D("40"),
        limit_price_usd=D("590"),
        account=fund.cold,
        rationale="Take profit.",
    )
    url = reverse("proposal-edit", args=[proposal.pk])
    signed_in(client, fund.users["manager"])

    page = client.get(f"{url}?kind=buy")
    response = client.post(
        f"{url}?kind=buy",
        {
            "kind": "buy",
            "asset": fund.asset.pk,
            "quantity": "30",
            "limit_price_usd": "595",
            "account": fund.cold.pk,
            "rationale": "Take some profit.",
        },
    )

    assert list(page.context["form"].fields) == FORM_FIELDS[K.SELL]
    assert page.context["form"]["quantity"].value() == D("40")
    assert not re.search(r'<a href="[^"]*\?kind=', page.content.decode())
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert (proposal.kind, proposal.quantity, proposal.limit_price_usd) == (
        K.SELL,
        D("30"),
        D("595"),
    )


# ---------------------------------------------------------------------------------------------
# The proposal page and the queue
# ---------------------------------------------------------------------------------------------


def test_the_proposal_page_shows_an_intakes_kind_quantity_account_source_and_document(client, fund):
    proposal = services.proposal_create(
        author=fund.users["manager"], fund=fund.fund, kind=K.INTAKE, **_intake_values(fund)
    )
    signed_in(client, fund.users["risk"])

    html = get_page(client, reverse("proposal-detail", args=[proposal.pk]))

    assert f"Proposal #{proposal.pk}: intake of 12.5 BNB from Court-ordered confiscation" in html
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "Kind Intake" in text
    assert "Quantity (units) 12.5" in text
    assert "Into custody account Cold multisig (Cold multisig wallet, BNB Smart Chain)" in text
    assert "Document reference Court decision 2-1234/2025" in text
    assert "Remaining (units) 12.5" in text


def test_an_intake_of_us_dollars_has_a_page_without_a_market_price(client, fund):
    proposal = services.proposal_create(
        author=fund.users["manager"],
        fund=fund.fund,
        kind=K.INTAKE,
        quantity=D("1000000"),
        funding_source=fund.funding_source,
        document_reference="Budget order 77",
        rationale="The year's allocation.",
    )
    signed_in(client, fund.users["manager"])

    html = get_page(client, reverse("proposal-detail", args=[proposal.pk]))

    assert f"Proposal #{proposal.pk}: intake of 1,000,000 USD from Republican budget" in html
    assert 'id="price-heading"' not in html
    assert "<dd>US dollars</dd>" in html


def test_the_queue_shows_a_transfers_kind_quantity_and_accounts(client, fund):
    proposal = services.proposal_create(
        author=fund.users["manager"],
        fund=fund.fund,
        kind=K.TRANSFER,
        asset=fund.asset,
        quantity=D("10"),
        account=fund.cold,
        destination_account=fund.exchange,
        rationale="To the exchange, to sell.",
    )
    services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])
    signed_in(client, fund.users["risk"])

    html = get_page(client, reverse("queue"))

    row = re.search(
        rf'<tr>\s*<th scope="row"><a href="{reverse("proposal-detail", args=[proposal.pk])}">'
        r".*?</tr>",
        html,
        re.S,
    ).group(0)
    assert '<span class="badge badge--kind badge--transfer">Transfer</span>' in row
    assert '<span class="num">10</span> Cold multisig → Exchange' in row


def _intake_values(fund: FundBuilder) -> dict:
    return {
        "asset": fund.asset,
        "quantity": D("12.5"),
        "account": fund.cold,
        "funding_source": fund.seized,
        "document_reference": "Court decision 2-1234/2025",
        "rationale": "BNB confiscated by the court, handed to the reserve.",
    }


# ---------------------------------------------------------------------------------------------
# Fills of each kind through the page
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FILL_FIELDS))
def test_the_fill_form_asks_for_what_the_kinds_fill_takes(client, fund, kind):
    terms = {
        K.SELL: {"quantity": D("10"), "limit_price_usd": D("590"), "account": fund.cold},
        K.TRANSFER: {
            "quantity": D("10"),
            "account": fund.cold,
            "destination_account": fund.exchange,
        },
        K.INTAKE: {**_intake_values(fund), "asset": fund.asset},
    }[kind]
    proposal = approved(fund, kind, **terms)
    signed_in(client, fund.users["treasury"])

    response = client.get(reverse("proposal-detail", args=[proposal.pk]))

    assert list(response.context["fill_form"].fields) == FILL_FIELDS[kind] + COMMON_FILL_FIELDS
    html = assert_strict_page(response)
    if kind == K.INTAKE:
        assert "valued at the consensus price at acceptance" in html


def test_treasury_records_a_sale_through_the_page_and_sees_its_realised_profit(client, fund):
    proposal = approved(fund, K.SELL, quantity=D("40"), limit_price_usd=D("590"), account=fund.cold)
    signed_in(client, fund.users["treasury"])
    url = reverse("execution-create", args=[proposal.pk])

    response = client.post(
        url,
        fill_data(
            fund,
            quantity="40",
            price_usd="600",
            fee_usd="1",
            venue="Binance",
            external_ref="sale-1",
        ),
    )

    assert response.status_code == 302
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.cost_usd, execution.realised_pnl_usd) == (D("23999"), D("3999"))
    assert held(fund.cold) == D("60")
    html = get_page(client, response.url)
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "Realised profit or loss (USD) 3,999.00" in text
    assert "Remaining (units) 0" in text


def test_treasury_records_a_transfer_with_its_network_fee_in_units(client, fund):
    proposal = approved(
        fund, K.TRANSFER, quantity=D("10"), account=fund.cold, destination_account=fund.exchange
    )
    signed_in(client, fund.users["treasury"])
    tx = "0x" + "ab" * 32

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(fund, quantity="10", fee_quantity="0.001", external_ref=tx, tx_hash=tx),
    )

    assert response.status_code == 302
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.quantity, execution.fee_quantity, execution.tx_hash) == (
        D("10"),
        D("0.001"),
        tx,
    )
    assert (held(fund.cold), held(fund.exchange)) == (D("89.999"), D("10"))
    text = " ".join(re.sub(r"<[^>]+>", " ", get_page(client, response.url)).split())
    assert "Network fee (units)" in text


def test_treasury_records_an_intake_received_without_a_price(client, fund):
    proposal = approved(fund, K.INTAKE, **_intake_values(fund))
    signed_in(client, fund.users["treasury"])

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        # A price typed anyway is not a field of an intake's fill: it is ignored.
        fill_data(fund, quantity="12.5", external_ref="COURT-2-1234", price_usd="1"),
    )

    assert response.status_code == 302
    execution = Execution.objects.get(proposal=proposal)
    assert (execution.quantity, execution.price_usd, execution.cost_usd) == (
        D("12.5"),
        D("600.005"),
        D("7500.0625"),
    )
    assert held(fund.cold) == D("112.5")
    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED


def test_an_intake_fill_of_more_than_remains_is_refused_and_books_nothing(client, fund):
    proposal = approved(fund, K.INTAKE, **_intake_values(fund))
    signed_in(client, fund.users["treasury"])
    entries = LedgerEntry.objects.count()

    response = client.post(
        reverse("execution-create", args=[proposal.pk]),
        fill_data(fund, quantity="13", external_ref="COURT-2-1234"),
    )

    assert response.status_code == 409
    html = assert_strict_page(response)
    assert 'id="refusal"' in html
    assert (Execution.objects.count(), LedgerEntry.objects.count()) == (0, entries)
    assert held(fund.cold) == D("100")


@pytest.fixture
def other_fund(db):
    return FundBuilder.alem_like(prefix="other_", asset_symbol="ETH")
