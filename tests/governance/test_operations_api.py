"""Operations of every kind through the v1 API (rule 15): proposals of each kind drafted,
submitted and decided through ``/api/v1/proposals/``, filled through ``.../executions/``,
refused with the service's field errors (400) and rule codes (409), and the buy requests
written before kinds existed answered as before.

BNB is on BNB Smart Chain at a consensus of USD 600.005; the cold multisig holds 100 BNB bought
at USD 500 (an opening balance), the exchange account none. The services' rules are covered in
depth by ``tests/governance/test_operations.py``; here each answer of the API is checked.
"""

from decimal import Decimal

import pytest
from django.utils import timezone

from governance import services
from governance.models import AuditEvent, Execution, Proposal, ProposalState
from portfolio.models import (
    AccountPosition,
    CustodyAccount,
    LedgerEntry,
    Price,
)
from tests.api import client_for
from tests.factories import CustodyAccountFactory, FundBuilder, PriceFactory, UserFactory

D = Decimal
S = ProposalState
CHAIN = "BNB Smart Chain"
PROPOSALS = "/api/v1/proposals/"
_refs = iter(range(1, 10_000))


def url(proposal_id: int, action: str = "") -> str:
    return f"{PROPOSALS}{proposal_id}/" + (f"{action}/" if action else "")


def assert_no_floats(value, where: str = "body") -> None:
    """Every number in the JSON is a decimal string or an integer (ids, versions): a float
    would have lost digits somewhere."""
    assert not isinstance(value, float), f"{where} is a float: {value!r}"
    if isinstance(value, dict):
        for key, item in value.items():
            assert_no_floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_floats(item, f"{where}[{index}]")


@pytest.fixture
def fund(alem: FundBuilder) -> FundBuilder:
    """The Alem-like fund with 100 BNB in a cold multisig and an empty exchange account."""
    return alem.with_custody_accounts()


def terms(fund: FundBuilder, kind: str, **values) -> dict:
    """A proposal's body for ``kind``, ids and decimal strings as a client sends them."""
    base = {"fund": fund.fund.pk, "kind": kind, "rationale": f"A {kind} for the reserve."}
    if kind != "intake":
        base["asset"] = "BNB"
    return {**base, **values}


def sale(fund, **values) -> dict:
    given = {"quantity": "40", "limit_price_usd": "590", "account": fund.cold.pk}
    return terms(fund, "sell", **{**given, **values})


def transfer(fund, **values) -> dict:
    given = {"quantity": "10", "account": fund.cold.pk, "destination_account": fund.exchange.pk}
    return terms(fund, "transfer", **{**given, **values})


def intake(fund, **values) -> dict:
    given = {
        "asset": "BNB",
        "quantity": "12.5",
        "account": fund.cold.pk,
        "funding_source": fund.seized.pk,
        "document_reference": "Court of Astana, case 2-1234/2026",
    }
    return terms(fund, "intake", **{**given, **values})


def create(fund: FundBuilder, body: dict) -> dict:
    response = client_for(fund.users["manager"]).post(PROPOSALS, body, format="json")
    assert response.status_code == 201, response.json()
    assert_no_floats(response.json())
    return response.json()


def approve_through_the_api(fund: FundBuilder, proposal_id: int) -> dict:
    """Submitted by its author, then approved by each stage's deciders, all through the API."""
    response = client_for(fund.users["manager"]).post(url(proposal_id, "submit"))
    assert response.status_code == 200, response.json()
    for username in ("risk", "committee1", "committee2", "ministry"):
        if response.json()["state"] != S.IN_REVIEW:
            break
        decided = client_for(fund.users[username]).post(
            url(proposal_id, "decisions"), {"verdict": "approve"}, format="json"
        )
        assert decided.status_code == 201, decided.json()
        response = client_for(fund.users["manager"]).get(url(proposal_id))
    assert response.json()["state"] == S.APPROVED, response.json()["compliance"]
    return response.json()


def approved(fund: FundBuilder, body: dict) -> int:
    proposal_id = create(fund, body)["id"]
    approve_through_the_api(fund, proposal_id)
    return proposal_id


def fill(fund: FundBuilder, proposal_id: int, **values):
    body = {
        "venue": "Binance",
        "external_ref": f"api-op-{next(_refs)}",
        "executed_at": timezone.now().isoformat(),
        **values,
    }
    response = client_for(fund.users["treasury"]).post(
        url(proposal_id, "executions"), body, format="json"
    )
    assert_no_floats(response.json())
    return response


def held(account) -> Decimal:
    position = AccountPosition.objects.filter(account=account).first()
    return position.quantity if position else D(0)


def books() -> tuple:
    """Everything a refused fill must leave as it was."""
    return (
        list(Execution.objects.values_list("pk", flat=True)),
        list(LedgerEntry.objects.values_list("pk", flat=True)),
        list(AccountPosition.objects.order_by("pk").values_list("quantity", "cost_usd")),
    )


# ---------------------------------------------------------------------------------------------
# The whole reserve, end to end, each person through the API
# ---------------------------------------------------------------------------------------------


def test_intake_buy_transfer_to_cold_storage_and_sale_run_end_to_end(fund):
    # Seized coins are taken into cold storage on the strength of the court's decision.
    taken_in = approved(fund, intake(fund))
    response = fill(fund, taken_in, quantity="12.5", tx_hash="0x" + "cd" * 32)
    assert response.status_code == 201, response.json()
    assert (response.json()["kind"], response.json()["price_usd"]) == ("intake", "600.0050000000")

    # The treasury buys 10.5 BNB on the exchange...
    bought = approved(
        fund,
        terms(
            fund,
            "buy",
            notional_usd="6400.00",
            limit_price_usd="650",
            funding_source=fund.funding_source.pk,
            account=fund.exchange.pk,
        ),
    )
    response = fill(fund, bought, quantity="10.5", price_usd="600", fee_usd="1", close=True)
    assert response.status_code == 201, response.json()
    assert (response.json()["account"], response.json()["account_name"]) == (
        fund.exchange.pk,
        "Exchange",
    )

    # ... and moves 10 of them to cold storage, the network taking 0.0005 more.
    moved = approved(
        fund,
        transfer(fund, account=fund.exchange.pk, destination_account=fund.cold.pk),
    )
    response = fill(fund, moved, quantity="10", fee_quantity="0.0005")
    assert response.status_code == 201, response.json()

    # Then 20 BNB are sold from cold storage.
    sold = approved(fund, sale(fund, quantity="20"))
    response = fill(fund, sold, quantity="20", price_usd="600", fee_usd="2")
    assert response.status_code == 201, response.json()
    assert D(response.json()["cost_usd"]) == D("11998")

    for proposal_id in (taken_in, bought, moved, sold):
        detail = client_for(fund.users["auditor"]).get(url(proposal_id)).json()
        assert detail["state"] == S.EXECUTED
        assert_no_floats(detail)
    accounts = client_for(fund.users["auditor"]).get(
        f"/api/v1/funds/{fund.fund.pk}/custody-accounts/"
    )
    assert accounts.status_code == 200
    assert_no_floats(accounts.json())
    shown = {
        a["name"]: [(p["asset"], D(p["quantity"])) for p in a["positions"]] for a in accounts.json()
    }
    assert shown == {
        "Cold multisig": [("BNB", D("102.5"))],  # 100 + 12.5 + 10 - 20
        "Exchange": [("BNB", D("0.4995"))],  # 10.5 - 10 - 0.0005
    }
    assert (held(fund.cold), held(fund.exchange)) == (D("102.5"), D("0.4995"))


# ---------------------------------------------------------------------------------------------
# Sales
# ---------------------------------------------------------------------------------------------


def test_a_sale_is_drafted_valued_and_filled_with_its_realised_profit(fund):
    created = create(fund, sale(fund))

    assert created["kind"] == created["side"] == "sell"
    # 40 at the consensus USD 600.005, rounded up to the cent: the service's, not the author's.
    assert created["notional_usd"] == "24000.20"
    assert created["limit_price_usd"] == "590.0000000000"
    assert created["quantity"] == created["remaining_quantity"] == "40.000000000000000000"
    assert created["executed_quantity"] == "0.000000000000000000"
    assert (created["account"], created["account_name"]) == (fund.cold.pk, "Cold multisig")
    assert created["destination_account"] is None
    assert created["funding_source"] is None
    approve_through_the_api(fund, created["id"])

    response = fill(fund, created["id"], quantity="40", price_usd="600", fee_usd="1")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["account"], body["account_name"]) == (
        "sell",
        fund.cold.pk,
        "Cold multisig",
    )
    # Proceeds 24,000 less the fee; the profit over the average cost of 40 coins at USD 500.
    assert (D(body["cost_usd"]), D(body["realised_pnl_usd"])) == (D("23999"), D("3999"))
    assert D(body["fee_quantity"]) == 0
    detail = client_for(fund.users["manager"]).get(url(created["id"])).json()
    assert detail["state"] == S.EXECUTED
    assert detail["executed_quantity"] == "40.000000000000000000"
    assert detail["remaining_quantity"] == "0.000000000000000000"
    assert held(fund.cold) == D("60")


def test_a_sale_below_its_lowest_price_gets_409_and_books_nothing(fund):
    proposal_id = approved(fund, sale(fund, limit_price_usd="600"))
    before = books()

    response = fill(fund, proposal_id, quantity="10", price_usd="599.99")

    assert response.status_code == 409
    assert response.json()["code"] == "below_limit_price"
    assert books() == before
    assert AuditEvent.objects.filter(
        action="execution.refused", proposal_id=proposal_id, payload__code="below_limit_price"
    ).exists()


def test_a_fill_of_more_than_the_quantity_left_gets_409_over_quantity(fund):
    proposal_id = approved(fund, sale(fund, quantity="10"))
    assert fill(fund, proposal_id, quantity="6", price_usd="600").status_code == 201
    before = books()

    response = fill(fund, proposal_id, quantity="4.000000000000000001", price_usd="600")

    assert response.status_code == 409
    assert response.json()["code"] == "over_quantity"
    assert books() == before
    detail = client_for(fund.users["treasury"]).get(url(proposal_id)).json()
    assert detail["remaining_quantity"] == "4.000000000000000000"


def test_a_sale_without_its_price_gets_400_beside_the_price(fund):
    proposal_id = approved(fund, sale(fund))
    before = books()

    response = fill(fund, proposal_id, quantity="10")

    assert response.status_code == 400
    assert response.json() == {"price_usd": ["A buy or a sale is recorded at its traded price."]}
    assert books() == before


def test_a_sale_names_its_account_and_lowest_price_and_no_notional(fund):
    body = terms(fund, "sell", quantity="1", notional_usd="600.00")

    response = client_for(fund.users["manager"]).post(PROPOSALS, body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "account": ["Required for a sale."],
        "limit_price_usd": ["Required for a sale."],
        "notional_usd": ["Not a term of a sale."],
    }
    assert not Proposal.objects.exists()


def test_editing_a_sales_quantity_revalues_it(fund):
    created = create(fund, sale(fund))

    response = client_for(fund.users["manager"]).patch(
        url(created["id"]), {"quantity": "10"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["quantity"] == "10.000000000000000000"
    assert response.json()["notional_usd"] == "6000.05"


# ---------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------


def test_a_transfer_takes_its_network_fee_in_units_and_no_price(fund):
    created = create(fund, transfer(fund))
    assert (created["destination_account"], created["destination_account_name"]) == (
        fund.exchange.pk,
        "Exchange",
    )
    assert created["limit_price_usd"] is None
    approve_through_the_api(fund, created["id"])

    # A null price reads as none given.
    response = fill(fund, created["id"], quantity="10", fee_quantity="0.0005", price_usd=None)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "transfer"
    assert body["fee_quantity"] == "0.000500000000000000"
    assert body["price_usd"] == "600.0050000000"  # carried at the consensus price
    assert (body["account"], body["destination_account"]) == (fund.cold.pk, fund.exchange.pk)
    assert body["destination_account_name"] == "Exchange"
    assert body["realised_pnl_usd"] is None
    assert (held(fund.cold), held(fund.exchange)) == (D("89.9995"), D("10"))


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        (
            {"price_usd": "600"},
            {"price_usd": ["A transfer or an intake is valued at the consensus price."]},
        ),
        (
            {"fee_usd": "1"},
            {"fee_usd": ["A transfer's fee is in units of the asset (fee_quantity)."]},
        ),
    ],
)
def test_a_transfer_refuses_a_price_or_a_fee_in_dollars(fund, values, errors):
    proposal_id = approved(fund, transfer(fund))
    before = books()

    response = fill(fund, proposal_id, quantity="10", **values)

    assert response.status_code == 400
    assert response.json() == errors
    assert books() == before


def test_a_transfer_whose_fee_exceeds_the_funds_share_gets_409_fee_above_limit(fund):
    proposal_id = approved(fund, transfer(fund))
    before = books()

    # 1% of 10 BNB is 0.1.
    response = fill(fund, proposal_id, quantity="10", fee_quantity="0.100000000000000001")

    assert response.status_code == 409
    assert response.json()["code"] == "fee_above_limit"
    assert books() == before


def test_a_transfer_of_more_than_the_account_holds_gets_409_insufficient_holdings(fund):
    proposal_id = approved(fund, transfer(fund, quantity="100"))
    before = books()

    response = fill(fund, proposal_id, quantity="100", fee_quantity="0.0001")

    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_holdings"
    assert books() == before


def test_a_transfer_to_an_account_removed_after_approval_gets_409_account_unusable(fund):
    proposal_id = approved(fund, transfer(fund, quantity="1"))
    CustodyAccount.objects.filter(pk=fund.exchange.pk).update(
        active=False, removed_at=timezone.now()
    )
    before = books()

    response = fill(fund, proposal_id, quantity="1")

    assert response.status_code == 409
    assert response.json()["code"] == "account_unusable"
    assert books() == before


# ---------------------------------------------------------------------------------------------
# Intakes
# ---------------------------------------------------------------------------------------------


def test_an_intake_of_us_dollars_has_no_asset_and_is_filled_without_a_price(fund):
    created = create(
        fund,
        terms(
            fund,
            "intake",
            quantity="250000.00",
            funding_source=fund.funding_source.pk,
            document_reference="Budget order 17 of 2026",
        ),
    )
    assert (created["asset"], created["account"]) == (None, None)
    assert created["notional_usd"] == "250000.00"
    approve_through_the_api(fund, created["id"])

    response = fill(fund, created["id"], quantity="250000")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["price_usd"], D(body["cost_usd"])) == (
        "intake",
        "1.0000000000",
        D("250000"),
    )
    assert body["account"] is None
    detail = client_for(fund.users["manager"]).get(url(created["id"])).json()
    assert detail["state"] == S.EXECUTED


def test_an_intake_needs_its_document_and_refuses_a_price(fund):
    response = client_for(fund.users["manager"]).post(
        PROPOSALS, intake(fund, document_reference="", limit_price_usd="600"), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "document_reference": ["Required for an intake."],
        "limit_price_usd": ["Not a term of an intake."],
    }
    assert not Proposal.objects.exists()


def test_an_intake_while_the_price_is_flagged_gets_409_consensus_unusable(fund):
    proposal_id = approved(fund, intake(fund, quantity="2"))
    # The two sources now disagree by far more than the fund tolerates.
    PriceFactory(asset=fund.asset, price=D("900"), source=Price.Source.BINANCE)
    before = books()

    response = fill(fund, proposal_id, quantity="2")

    assert response.status_code == 409
    assert response.json()["code"] == "consensus_unusable"
    assert books() == before


# ---------------------------------------------------------------------------------------------
# Accounts are the proposal's fund's
# ---------------------------------------------------------------------------------------------


def test_an_account_of_another_fund_the_caller_sees_gets_400_beside_it(fund):
    other = FundBuilder.alem_like(prefix="other_")
    theirs = CustodyAccountFactory(fund=other.fund, name="Their cold")
    # The manager also audits the other fund, so its accounts are visible to them.
    services.role_grant(user=fund.users["manager"], fund=other.fund, role="audit")

    response = client_for(fund.users["manager"]).post(
        PROPOSALS, transfer(fund, destination_account=theirs.pk), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "destination_account": ["This custody account belongs to another fund."]
    }
    assert not Proposal.objects.filter(fund=fund.fund).exists()


@pytest.mark.parametrize("field", ["account", "destination_account"])
def test_an_account_of_a_fund_the_caller_cannot_see_reads_as_nonexistent(fund, field):
    theirs = CustodyAccountFactory(name="Someone else's cold")

    response = client_for(fund.users["manager"]).post(
        PROPOSALS, transfer(fund, **{field: theirs.pk}), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {field: [f'Invalid pk "{theirs.pk}" - object does not exist.']}
    assert not Proposal.objects.exists()


def test_an_account_on_another_chain_gets_400(fund):
    bitcoin = CustodyAccountFactory(fund=fund.fund, chain="Bitcoin", address="bc1qtest")

    response = client_for(fund.users["manager"]).post(
        PROPOSALS, sale(fund, account=bitcoin.pk), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "account": ["This account is on Bitcoin; BNB is on BNB Smart Chain."]
    }


# ---------------------------------------------------------------------------------------------
# Buy requests written before kinds existed
# ---------------------------------------------------------------------------------------------


def buy(fund, **values) -> dict:
    body = {
        "fund": fund.fund.pk,
        "asset": "BNB",
        "notional_usd": "500000.00",
        "limit_price_usd": "650.00",
        "rationale": "Build the strategic BNB position.",
        "funding_source": fund.funding_source.pk,
    }
    return {**body, **values}


@pytest.mark.parametrize(
    "extra", [{}, {"side": "buy"}, {"kind": "buy"}, {"side": "buy", "kind": "buy"}]
)
def test_a_buy_request_with_side_buy_or_neither_is_a_buy(fund, extra):
    created = create(fund, buy(fund, **extra))

    assert created["kind"] == created["side"] == "buy"
    assert created["notional_usd"] == "500000.00"
    assert Proposal.objects.get().kind == "buy"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"side": "sell"}, 'Deprecated and accepted only as "buy"; give other kinds in `kind`.'),
        ({"side": "buy", "kind": "sell"}, "Contradicts `kind`; send `kind` only."),
        ({"side": "sideways"}, '"sideways" is not a valid choice.'),
    ],
)
def test_side_other_than_buy_gets_400_pointing_to_kind(fund, extra, message):
    response = client_for(fund.users["manager"]).post(PROPOSALS, buy(fund, **extra), format="json")

    assert response.status_code == 400
    assert response.json() == {"side": [message]}
    assert not Proposal.objects.exists()


def test_an_unknown_kind_gets_400(fund):
    response = client_for(fund.users["manager"]).post(
        PROPOSALS, buy(fund, kind="swap"), format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["kind"]
    assert not Proposal.objects.exists()


@pytest.mark.parametrize("field", ["kind", "side"])
def test_the_kind_cannot_be_edited(fund, field):
    created = create(fund, sale(fund))

    response = client_for(fund.users["manager"]).patch(
        url(created["id"]), {field: "buy"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {field: ["This field cannot be edited."]}
    assert Proposal.objects.get().kind == "sell"
    assert not AuditEvent.objects.filter(action="proposal.updated").exists()


@pytest.mark.parametrize("price", [{}, {"price_usd": None}])
def test_a_buy_without_a_price_in_its_fill_gets_400(fund, price):
    proposal_id = approved(fund, buy(fund, notional_usd="6000.00"))

    response = fill(fund, proposal_id, quantity="1", **price)

    assert response.status_code == 400
    assert response.json() == {"price_usd": ["A buy or a sale is recorded at its traded price."]}
    assert not Execution.objects.exists()


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------


def test_the_schema_documents_kinds_their_terms_and_refusals(db):
    response = client_for(UserFactory()).get("/api/schema/?format=json")

    assert response.status_code == 200
    schema = response.json()
    components = schema["components"]["schemas"]
    assert components["OperationKindEnum"]["enum"] == ["buy", "sell", "transfer", "intake"]
    proposal = components["Proposal"]["properties"]
    for name in ("kind", "quantity", "executed_quantity", "remaining_quantity", "account"):
        assert name in proposal, name
    assert {"destination_account", "document_reference"} <= set(proposal)
    assert proposal["side"]["deprecated"] is True
    execution = components["Execution"]["properties"]
    assert {"kind", "fee_quantity", "realised_pnl_usd", "account", "destination_account"} <= set(
        execution
    )
    assert "fee_quantity" in components["ExecutionCreate"]["properties"]
    create_operation = schema["paths"]["/api/v1/proposals/"]["post"]
    assert "`transfer`: `asset`, `quantity`, `account`" in create_operation["description"]
    fills = schema["paths"]["/api/v1/proposals/{id}/executions/"]["post"]["description"]
    for code in (
        "below_limit_price",
        "over_quantity",
        "insufficient_holdings",
        "account_unusable",
        "consensus_unusable",
        "fee_above_limit",
    ):
        assert f"`{code}`" in fills, code


def test_the_documented_terms_of_each_kind_are_the_services(db):
    from governance.api.serializers import KIND_TERMS
    from governance.operations import TERMS

    paragraphs = {
        line.split("`")[1]: line
        for line in KIND_TERMS.replace("\n  ", " ").splitlines()
        if line.startswith("- `")
    }

    assert set(paragraphs) == set(TERMS)
    for kind, spec in TERMS.items():
        named = {term for term in spec.allowed if f"`{term}`" in paragraphs[kind]}
        assert named == spec.allowed, kind
