"""A reserve funded by seized assets, run end to end by people in separate roles: an intake of
seized BNB into cold storage, a purchase on an exchange, a transfer from the exchange to cold
storage, a sale; after every step the books equal the chain (an in-process EVM serving as BNB
Smart Chain) and the exchange's statement, and no one did any step alone.
"""

from decimal import Decimal, localcontext

import pytest
from django.utils import timezone

from governance import services
from governance.models import Decision, Execution, Proposal, ProposalState
from portfolio.models import AccountPosition, Asset, FundingSource, Position
from portfolio.reconciliation.models import ReconciliationBreak
from portfolio.reconciliation.services import reconciliation_run, statement_record
from tests.factories import FundBuilder, otp_code
from tests.portfolio.reconciliation_fixtures import custody_account, evm_test_chain, send_on_chain

D = Decimal
WEI = 10**18
_refs = iter(range(1, 1000))


@pytest.fixture
def reserve(alem: FundBuilder, settings, monkeypatch):
    web3 = evm_test_chain(settings, monkeypatch)
    Asset.objects.filter(pk=alem.asset.pk).update(chain="BNB Smart Chain")
    alem.asset.refresh_from_db()
    cold_address = web3.eth.account.create().address
    alem.web3 = web3
    alem.cold = custody_account(
        alem.fund, name="Cold multisig", chain="BNB Smart Chain", address=cold_address.lower()
    )
    alem.cold.address = cold_address  # the chain's spelling, for sending to it
    alem.exchange = custody_account(
        alem.fund, name="Exchange", chain="BNB Smart Chain", reference="EX-1"
    )
    alem.seized = FundingSource.objects.create(
        fund=alem.fund, name="Seized digital assets", kind="seized_assets"
    )
    return alem


def run(reserve: FundBuilder, kind: str, quantity: str, **terms) -> Execution:
    """One operation from draft to the books: the manager drafts and submits it, the policy's
    deciders approve it, the treasury operator records it."""
    fill = terms.pop("fill", {})
    if kind != "buy":
        terms["quantity"] = D(quantity)
    proposal = services.proposal_create(
        author=reserve.users["manager"],
        fund=reserve.fund,
        kind=kind,
        rationale=f"The reserve's {kind}.",
        **terms,
    )
    services.proposal_submit(proposal_id=proposal.pk, actor=reserve.users["manager"])
    proposal = reserve.approve_fully(proposal)
    assert proposal.state == ProposalState.APPROVED, proposal.compliance
    treasury = reserve.users["treasury"]
    execution, _ = services.execution_record(
        proposal_id=proposal.pk,
        actor=treasury,
        quantity=D(quantity),
        venue="Binance",
        external_ref=f"reserve-{next(_refs)}",
        executed_at=timezone.now(),
        otp_token=otp_code(treasury),
        **fill,
    )
    return execution


def held(account) -> Decimal:
    position = AccountPosition.objects.filter(account=account).first()
    return position.quantity if position else D(0)


def books_equal_the_chain_and_the_statement(reserve: FundBuilder) -> None:
    reconciliation_run()
    as_of = timezone.now().isoformat()
    statement_record(
        actor=reserve.users["treasury"],
        account_id=reserve.exchange.pk,
        file_name="exchange.csv",
        content=f"asset,balance,as_of\nBNB,{held(reserve.exchange).normalize():f},{as_of}\n".encode(),
    )
    on_chain = D(reserve.web3.eth.get_balance(reserve.cold.address)) / WEI
    assert held(reserve.cold) == on_chain
    assert not ReconciliationBreak.objects.filter(state="open").exists()


def test_a_seized_asset_reserve_runs_end_to_end_with_the_books_equal_to_the_chain(reserve):
    seized_wallet = reserve.web3.eth.accounts[0]  # what send_on_chain sends from

    # Intake: the court hands over 10 BNB, sent to the cold multisig.
    send_on_chain(reserve.web3, reserve.cold.address, 10 * WEI)
    run(
        reserve,
        "intake",
        "10",
        asset=reserve.asset,
        account=reserve.cold,
        funding_source=reserve.seized,
        document_reference="Court of Astana, case 2-77/2026",
    )
    books_equal_the_chain_and_the_statement(reserve)

    # Buy: 8 BNB on the exchange.
    run(
        reserve,
        "buy",
        "8",
        asset=reserve.asset,
        notional_usd=D("5000.00"),
        limit_price_usd=D("650"),
        funding_source=reserve.funding_source,
        account=reserve.exchange,
        fill={"price_usd": D("600"), "close": True},
    )
    books_equal_the_chain_and_the_statement(reserve)

    # Transfer to cold storage: 5 BNB arrive, the exchange charged 0.0005 for the withdrawal.
    send_on_chain(reserve.web3, reserve.cold.address, 5 * WEI)
    run(
        reserve,
        "transfer",
        "5",
        asset=reserve.asset,
        account=reserve.exchange,
        destination_account=reserve.cold,
        fill={"fee_quantity": D("0.0005"), "tx_hash": "0x" + "ef" * 32},
    )
    books_equal_the_chain_and_the_statement(reserve)

    # Sell: 2 BNB of what stayed on the exchange.
    cost_before = Position.objects.get(fund=reserve.fund, asset=reserve.asset).cost_usd
    sale = run(
        reserve,
        "sell",
        "2",
        asset=reserve.asset,
        account=reserve.exchange,
        limit_price_usd=D("590"),
        fill={"price_usd": D("601"), "fee_usd": D("1.20")},
    )
    books_equal_the_chain_and_the_statement(reserve)

    assert (held(reserve.cold), held(reserve.exchange)) == (D("15"), D("0.9995"))
    # The realised result is the net proceeds less the cost the sale took off the books.
    cost_after = Position.objects.get(fund=reserve.fund, asset=reserve.asset).cost_usd
    assert sale.cost_usd == D("2") * D("601") - D("1.20")
    with localcontext(prec=60):
        assert sale.realised_pnl_usd == sale.cost_usd - (cost_before - cost_after)
    assert reserve.web3.eth.get_balance(seized_wallet) < 10**6 * WEI  # the coins left it
    # No one did any of it alone: for every operation the author, each decider and the
    # treasury operator are different people, and at least three took part.
    for proposal in Proposal.objects.filter(fund=reserve.fund):
        deciders = set(Decision.objects.filter(proposal=proposal).values_list("user_id", flat=True))
        executors = set(proposal.executions.values_list("recorded_by_id", flat=True))
        assert proposal.author_id not in deciders | executors
        assert not deciders & executors
        assert len({proposal.author_id} | deciders | executors) >= 3
    assert Proposal.objects.filter(fund=reserve.fund, state="executed").count() == 4
