"""Operations of every kind through the same governance (rule 15): sales, transfers between
custody accounts and intakes, each from draft to the books, with the checks of its kind.

Every refusal test checks that nothing was booked: no execution, no ledger entry, positions as
before.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.utils import timezone

from governance import services
from governance.exceptions import ComplianceBlocked, ExecutionRefused
from governance.models import AuditEvent, Execution, Proposal, ProposalState
from governance.policies import StageSpec
from portfolio import selectors as books
from portfolio.models import (
    AccountPosition,
    CustodyAccount,
    FundRole,
    LedgerEntry,
    Position,
    Price,
)
from tests.factories import CustodyAccountFactory, FundBuilder, PriceFactory, otp_code

D = Decimal
S = ProposalState
K = Proposal.Kind
R = FundRole
CHAIN = "BNB Smart Chain"
_refs = iter(range(1, 10_000))


@pytest.fixture
def fund(alem: FundBuilder) -> FundBuilder:
    """The Alem-like fund with 100 BNB in a cold multisig and an empty exchange account."""
    return alem.with_custody_accounts()


def operation(fund: FundBuilder, kind: str, *, submit: bool = True, **terms) -> Proposal:
    values = {"rationale": f"A {kind} for the reserve.", **terms}
    if kind != K.INTAKE or "asset" not in values:
        values.setdefault("asset", fund.asset)
    proposal = services.proposal_create(
        author=fund.users["manager"], fund=fund.fund, kind=kind, **values
    )
    if submit:
        proposal = services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])
    return proposal


def approved(fund: FundBuilder, kind: str, **terms) -> Proposal:
    proposal = fund.approve_fully(operation(fund, kind, **terms))
    assert proposal.state == S.APPROVED, proposal.compliance
    return proposal


def execute(fund: FundBuilder, proposal: Proposal, quantity: str, **terms):
    user = fund.users["treasury"]
    execution, _ = services.execution_record(
        proposal_id=proposal.pk,
        actor=user,
        quantity=D(quantity),
        venue=terms.pop("venue", "Binance"),
        external_ref=terms.pop("ref", f"op-{next(_refs)}"),
        executed_at=terms.pop("executed_at", timezone.now()),
        otp_token=otp_code(user),
        **terms,
    )
    return execution


def held(account) -> Decimal:
    return books_of(account).get("quantity", D(0))


def books_of(account) -> dict:
    position = AccountPosition.objects.filter(account=account).values().first()
    return position or {}


def assert_positions_are_the_ledgers_sums(fund: FundBuilder) -> None:
    """Per account and per fund, every running position equals its entries' sums."""
    for position in AccountPosition.objects.filter(account__fund=fund.fund):
        sums = LedgerEntry.objects.filter(account=position.account, asset=position.asset)
        totals = sums.aggregate(q=Sum("quantity"), v=Sum("value_usd"))
        assert (position.quantity, position.cost_usd) == (totals["q"], totals["v"])
        assert position.quantity >= 0
    for position in Position.objects.filter(fund=fund.fund):
        sums = LedgerEntry.objects.filter(fund=fund.fund, asset=position.asset)
        totals = sums.aggregate(q=Sum("quantity"), v=Sum("value_usd"))
        assert (position.quantity, position.cost_usd) == (totals["q"], totals["v"])


def nothing_booked(fund: FundBuilder, before: tuple) -> None:
    assert (Execution.objects.count(), LedgerEntry.objects.count()) == before
    assert_positions_are_the_ledgers_sums(fund)


def counts() -> tuple[int, int]:
    return Execution.objects.count(), LedgerEntry.objects.count()


# ---------------------------------------------------------------------------------------------
# Sales
# ---------------------------------------------------------------------------------------------


def test_a_sale_runs_from_draft_to_the_books_with_its_realised_profit(fund):
    proposal = approved(fund, K.SELL, quantity=D("40"), limit_price_usd=D("590"), account=fund.cold)
    # Valued at the consensus price (USD 600.005), rounded up to the cent: no ministry stage.
    assert proposal.notional_usd == D("24000.20")
    assert [c["rule"] for c in proposal.compliance["checks"]] == [
        "single_proposal_limit",
        "holdings",
        "market_price",
        "lowest_price",
        "custody_accounts",
    ]
    cash_before = books.fund_cash_usd(fund.fund)

    execution = execute(fund, proposal, "40", price_usd=D("600"), fee_usd=D("1"))

    proposal.refresh_from_db()
    assert (proposal.state, proposal.executed_quantity) == (S.EXECUTED, D("40"))
    # Net proceeds 23,999 less the average cost of 40 coins at USD 500.
    assert (execution.cost_usd, execution.realised_pnl_usd) == (D("23999"), D("3999"))
    assert held(fund.cold) == D("60")
    assert books_of(fund.cold)["cost_usd"] == D("30000")
    assert books.fund_cash_usd(fund.fund) == cash_before + D("23999")
    kinds = set(
        LedgerEntry.objects.filter(reference__startswith=f"execution:{execution.pk}:").values_list(
            "kind", flat=True
        )
    )
    assert kinds == {"sell", "fee"}
    assert AuditEvent.objects.filter(action="execution.recorded", proposal=proposal).exists()
    assert_positions_are_the_ledgers_sums(fund)


def test_a_sale_of_more_than_the_account_holds_is_blocked_at_submission(fund):
    proposal = operation(
        fund,
        K.SELL,
        submit=False,
        quantity=D("100.000000000000000001"),
        limit_price_usd=D("590"),
        account=fund.cold,
    )

    with pytest.raises(ComplianceBlocked, match="Not enough BNB in the account"):
        services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])

    proposal.refresh_from_db()
    assert proposal.state == S.DRAFT
    assert AuditEvent.objects.filter(action="proposal.submit_refused", proposal=proposal).exists()


def test_an_approved_sale_reserves_its_coins_against_the_next(fund):
    approved(fund, K.SELL, quantity=D("60"), limit_price_usd=D("590"), account=fund.cold)
    second = operation(
        fund, K.SELL, submit=False, quantity=D("41"), limit_price_usd=D("590"), account=fund.cold
    )

    with pytest.raises(ComplianceBlocked, match=r"40 available after 60 reserved"):
        services.proposal_submit(proposal_id=second.pk, actor=fund.users["manager"])


def test_a_sale_below_its_lowest_price_is_refused_and_books_nothing(fund):
    proposal = approved(fund, K.SELL, quantity=D("10"), limit_price_usd=D("600"), account=fund.cold)
    before = counts()

    with pytest.raises(ExecutionRefused) as refused:
        execute(fund, proposal, "10", price_usd=D("599.99"))

    assert refused.value.code == "below_limit_price"
    nothing_booked(fund, before)
    assert held(fund.cold) == D("100")


def test_a_sale_names_its_account_and_lowest_price(fund):
    with pytest.raises(ValidationError) as refused:
        operation(fund, K.SELL, submit=False, quantity=D("1"), notional_usd=D("600"))

    assert refused.value.message_dict == {
        "account": ["Required for a sale."],
        "limit_price_usd": ["Required for a sale."],
        "notional_usd": ["Not a term of a sale."],
    }
    assert not Proposal.objects.filter(kind=K.SELL).exists()


def test_a_sale_of_an_asset_off_the_whitelist_is_allowed(fund):
    fund.fund.whitelisted_assets.clear()

    proposal = approved(fund, K.SELL, quantity=D("5"), limit_price_usd=D("590"), account=fund.cold)

    assert "whitelist" not in [c["rule"] for c in proposal.compliance["checks"]]


# ---------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------


def test_a_transfer_moves_coins_at_their_cost_and_books_the_network_fee(fund):
    proposal = approved(
        fund, K.TRANSFER, quantity=D("10"), account=fund.cold, destination_account=fund.exchange
    )

    execution = execute(
        fund,
        proposal,
        "10",
        fee_quantity=D("0.0005"),
        tx_hash="0x" + "ab" * 32,
    )

    assert (held(fund.cold), held(fund.exchange)) == (D("89.9995"), D("10"))
    assert books_of(fund.exchange)["cost_usd"] == D("5000")  # 10 at the average USD 500
    assert books.fund_holdings(fund.fund)[0].quantity == D("99.9995")
    assert (execution.kind, execution.destination_account, execution.fee_quantity) == (
        "transfer",
        fund.exchange,
        D("0.0005"),
    )
    assert execution.price_usd == D("600.005")  # carried at the consensus price
    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED
    assert_positions_are_the_ledgers_sums(fund)


def test_a_transfer_taking_more_than_the_account_holds_with_its_fee_is_refused(fund):
    proposal = approved(
        fund, K.TRANSFER, quantity=D("100"), account=fund.cold, destination_account=fund.exchange
    )
    before = counts()

    with pytest.raises(ExecutionRefused) as refused:
        execute(fund, proposal, "100", fee_quantity=D("0.0001"))

    assert refused.value.code == "insufficient_holdings"
    nothing_booked(fund, before)


def test_a_transfer_to_an_account_still_cooling_off_is_blocked(fund):
    fresh = CustodyAccountFactory(
        fund=fund.fund, name="New cold", usable_from=timezone.now() + dt.timedelta(hours=47)
    )
    proposal = operation(
        fund,
        K.TRANSFER,
        submit=False,
        quantity=D("1"),
        account=fund.cold,
        destination_account=fresh,
    )

    with pytest.raises(ComplianceBlocked, match="New cold is cooling off until"):
        services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])


def test_a_transfer_to_a_removed_account_is_refused_at_execution(fund):
    proposal = approved(
        fund, K.TRANSFER, quantity=D("1"), account=fund.cold, destination_account=fund.exchange
    )
    CustodyAccount.objects.filter(pk=fund.exchange.pk).update(
        active=False, removed_at=timezone.now()
    )
    before = counts()

    with pytest.raises(ExecutionRefused) as refused:
        execute(fund, proposal, "1")

    assert refused.value.code == "account_unusable"
    nothing_booked(fund, before)


@pytest.mark.parametrize(
    "destination, message",
    [
        ("same", "A transfer goes to another account."),
        ("other_chain", "This account is on Bitcoin; BNB is on BNB Smart Chain."),
        ("other_fund", "This custody account belongs to another fund."),
    ],
)
def test_a_transfer_stays_inside_the_fund_and_on_one_chain(fund, destination, message):
    target = {
        "same": fund.cold,
        "other_chain": CustodyAccountFactory(fund=fund.fund, chain="Bitcoin", address="bc1qtest"),
        "other_fund": CustodyAccountFactory(),
    }[destination]

    with pytest.raises(ValidationError) as refused:
        operation(fund, K.TRANSFER, quantity=D("1"), account=fund.cold, destination_account=target)

    assert refused.value.message_dict == {"destination_account": [message]}
    assert not Proposal.objects.filter(kind=K.TRANSFER).exists()


# ---------------------------------------------------------------------------------------------
# Intakes
# ---------------------------------------------------------------------------------------------


def test_an_intake_of_seized_coins_is_valued_at_acceptance_and_records_its_source(fund):
    proposal = approved(
        fund,
        K.INTAKE,
        quantity=D("12.5"),
        account=fund.cold,
        funding_source=fund.seized,
        document_reference="Court of Astana, case 2-1234/2026",
    )

    execution = execute(fund, proposal, "12.5", tx_hash="0x" + "cd" * 32)

    entry = LedgerEntry.objects.get(reference=f"execution:{execution.pk}:intake")
    assert (entry.kind, entry.account, entry.funding_source, entry.quantity) == (
        "contribution",
        fund.cold,
        fund.seized,
        D("12.5"),
    )
    assert entry.value_usd == D("12.5") * D("600.005")
    assert entry.memo == "Court of Astana, case 2-1234/2026"
    assert held(fund.cold) == D("112.5")
    assert_positions_are_the_ledgers_sums(fund)


def test_an_intake_needs_its_document(fund):
    with pytest.raises(ValidationError) as refused:
        operation(fund, K.INTAKE, quantity=D("1"), account=fund.cold, funding_source=fund.seized)

    assert refused.value.message_dict == {"document_reference": ["Required for an intake."]}


def test_an_intake_is_refused_while_the_price_is_flagged(fund):
    proposal = approved(
        fund,
        K.INTAKE,
        quantity=D("2"),
        account=fund.cold,
        funding_source=fund.seized,
        document_reference="Mining statement 2026-11",
    )
    # The two sources now disagree by far more than the fund tolerates.
    PriceFactory(asset=fund.asset, price=D("900"), source=Price.Source.BINANCE)
    before = counts()

    with pytest.raises(ExecutionRefused) as refused:
        execute(fund, proposal, "2")

    assert refused.value.code == "consensus_unusable"
    nothing_booked(fund, before)


def test_an_intake_of_us_dollars_books_cash_from_its_source(fund):
    cash = books.fund_cash_usd(fund.fund)
    proposal = approved(
        fund,
        K.INTAKE,
        asset=None,
        quantity=D("2500000.00"),
        funding_source=fund.funding_source,
        document_reference="Budget order 17 of 2026",
    )
    assert proposal.notional_usd == D("2500000.00")

    execute(fund, proposal, "1000000")
    execute(fund, proposal, "1500000")

    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED
    assert books.fund_cash_usd(fund.fund) == cash + D("2500000")
    assert (
        LedgerEntry.objects.filter(
            kind="contribution", asset=None, funding_source=fund.funding_source
        ).count()
        == 3
    )  # the opening cash and the two receipts


# ---------------------------------------------------------------------------------------------
# The policy per kind
# ---------------------------------------------------------------------------------------------


def test_each_kind_follows_the_stages_its_policy_gives_it(fund):
    stages = [
        StageSpec(1, "Risk review", R.REVIEW_RISK, 1),
        StageSpec(2, "Committee", R.VOTE_COMMITTEE, 2, kinds=("buy", "sell")),
        StageSpec(3, "Ministry for large sales", R.APPROVE_MINISTRY, 1, D("20000"), ("sell",)),
    ]
    draft = services.policy_draft(actor=fund.users["fundadmin"], fund=fund.fund, stages=stages)
    services.policy_publish(actor=fund.users["fundadmin2"], policy_id=draft.pk)

    sale = operation(fund, K.SELL, quantity=D("40"), limit_price_usd=D("590"), account=fund.cold)
    transfer = operation(
        fund, K.TRANSFER, quantity=D("1"), account=fund.cold, destination_account=fund.exchange
    )

    def stage_orders(proposal):
        event = AuditEvent.objects.get(action="proposal.submitted", proposal=proposal)
        return [stage["order"] for stage in event.payload["stages"]]

    assert stage_orders(sale) == [1, 2, 3]  # USD 24,000.20 reaches the ministry's threshold
    assert stage_orders(transfer) == [1]
    assert fund.approve_fully(transfer).state == S.APPROVED


def test_a_buy_into_a_custody_account_lands_there(fund):
    from tests.governance.test_executions import approved as approved_buy

    proposal = approved_buy(fund, account=fund.exchange)

    execute(fund, proposal, "10", price_usd=D("600"))

    assert held(fund.exchange) == D("10")
    assert_positions_are_the_ledgers_sums(fund)


def test_an_overdraft_written_behind_the_services_is_refused_by_the_database(fund):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError, match="never_negative"), transaction.atomic():
        LedgerEntry.objects.create(
            fund=fund.fund,
            kind="sell",
            asset=fund.asset,
            account=fund.cold,
            quantity=D("-100.1"),
            value_usd=D("-1"),
            booked_at=timezone.now(),
        )
