"""Concurrent fills cannot break rule 10 (DESIGN rule 12), on PostgreSQL with real threads.

Each thread has its own database connection; a barrier releases them together. The proposal
row lock serialises fills of one proposal, and the unique external reference stops a fill being
booked twice, so whatever the interleaving the outcome is one of the serial ones: the approved
notional is never exceeded and the ledger agrees with the executions.
"""

from collections import Counter
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from governance import services
from governance.audit import audit_verify
from governance.exceptions import DuplicateExternalRef, ExecutionRefused
from governance.models import AuditEvent, Execution, Proposal, ProposalState
from portfolio import selectors as books
from portfolio.models import FundRole, LedgerEntry
from tests.factories import FundBuilder, UserFactory, otp_code
from tests.threads import run_together

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
S = ProposalState
CASH = D("25000000.00")


def operators(fund: FundBuilder, count: int) -> list:
    """Treasury operators racing each other, each with a device of their own (one code is good
    once, so one person cannot race themselves past step-up)."""
    users = [UserFactory(username=f"operator{i}") for i in range(count)]
    for user in users:
        services.role_grant(user=user, fund=fund.fund, role=FundRole.EXECUTE_TRADES)
    return users


def fill_call(
    fund: FundBuilder,
    proposal: Proposal,
    *,
    ref: str,
    quantity: str,
    fee: str = "0",
    user=None,
):
    user = user or fund.users["treasury"]
    executed_at = timezone.now()
    token = otp_code(user)
    return lambda: services.execution_record(
        proposal_id=proposal.pk,
        actor=user,
        quantity=D(quantity),
        price_usd=D("600"),
        fee_usd=D(fee),
        venue="Binance",
        external_ref=ref,
        executed_at=executed_at,
        otp_token=token,
    )


def assert_audit_chain_intact() -> None:
    verification = audit_verify()
    assert verification.ok, verification
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))


@pytest.fixture
def fund(settings) -> FundBuilder:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return FundBuilder.alem_like()


def approved(fund: FundBuilder, notional: str) -> Proposal:
    proposal = fund.approve_fully(fund.proposal(submit=True, notional_usd=D(notional)))
    assert proposal.state == S.APPROVED
    return proposal


def test_parallel_fills_never_exceed_the_notional(fund):
    # Ten fills of USD 150,000 (30% of USD 500,000) race: exactly three fit.
    proposal = approved(fund, "500000.00")
    calls = [
        fill_call(fund, proposal, ref=f"race-{i}", quantity="250", user=user)
        for i, user in enumerate(operators(fund, 10))
    ]

    results = run_together(calls)

    booked = [value for status, value in results if status == "ok"]
    refused = [value for status, value in results if status == "error"]
    assert len(booked) == 3
    assert all(created for _, created in booked)
    assert all(isinstance(error, ExecutionRefused) for error in refused), refused
    assert Counter(error.code for error in refused) == {"over_notional": 7}
    proposal.refresh_from_db()
    assert proposal.state == S.APPROVED
    assert proposal.executed_notional_usd == D("450000")
    executions = Execution.objects.filter(proposal=proposal)
    assert executions.count() == 3
    assert executions.aggregate(s=Sum("cost_usd"))["s"] == D("450000")
    assert {e.pk for e, _ in booked} == set(executions.values_list("pk", flat=True))
    # The ledger agrees: three asset entries in, three cash entries out, nothing else.
    assert LedgerEntry.objects.filter(reference__startswith="execution:").count() == 6
    assert books.fund_holdings(fund.fund) == [
        books.Holding(fund.asset.pk, "BNB", D("750"), D("450000"))
    ]
    assert books.fund_cash_usd(fund.fund) == CASH - D("450000")
    assert Counter(
        AuditEvent.objects.filter(proposal=proposal, action__startswith="execution.").values_list(
            "action", flat=True
        )
    ) == {"execution.recorded": 3, "execution.refused": 7}
    assert_audit_chain_intact()


def test_parallel_fills_that_exactly_fill_the_notional_execute_it_once(fund):
    # Eight fills of a quarter each race: four fit, and the fourth executes the proposal.
    proposal = approved(fund, "60000.00")
    calls = [
        fill_call(fund, proposal, ref=f"quarter-{i}", quantity="25", user=user)
        for i, user in enumerate(operators(fund, 8))
    ]

    results = run_together(calls)

    assert Counter(status for status, _ in results) == {"ok": 4, "error": 4}
    # Every fill is a quarter, so none is ever too big: the four that come after the fourth
    # find the proposal executed.
    codes = Counter(value.code for status, value in results if status == "error")
    assert codes == {"invalid_state": 4}
    proposal.refresh_from_db()
    assert (proposal.state, proposal.executed_notional_usd) == (S.EXECUTED, D("60000"))
    assert AuditEvent.objects.filter(proposal=proposal, action="proposal.executed").count() == 1
    assert books.fund_cash_usd(fund.fund) == CASH - D("60000")
    assert_audit_chain_intact()


def test_the_same_external_reference_posted_in_parallel_books_once(fund):
    proposal = approved(fund, "500000.00")
    calls = [fill_call(fund, proposal, ref="0xsame", quantity="10", fee="1.50") for _ in range(8)]

    results = run_together(calls)

    assert all(status == "ok" for status, _ in results), results
    executions = {execution.pk for (execution, _created) in (value for _, value in results)}
    assert len(executions) == 1
    assert sorted(created for _, (_, created) in results) == [False] * 7 + [True]
    execution = Execution.objects.get()
    assert execution.pk in executions
    assert list(
        LedgerEntry.objects.filter(reference__startswith="execution:")
        .order_by("pk")
        .values_list("reference", "quantity")
    ) == [
        (f"execution:{execution.pk}:asset", D("10")),
        (f"execution:{execution.pk}:cash", D("-6000")),
        (f"execution:{execution.pk}:fee", D("-1.5")),
    ]
    proposal.refresh_from_db()
    assert proposal.executed_notional_usd == D("6001.50")
    assert books.fund_cash_usd(fund.fund) == CASH - D("6001.50")
    assert AuditEvent.objects.filter(action="execution.recorded").count() == 1
    assert_audit_chain_intact()


def test_the_same_external_reference_on_two_proposals_in_parallel_books_once(fund):
    first = approved(fund, "500000.00")
    second = approved(fund, "400000.00")
    calls = [
        fill_call(fund, proposal, ref="0xcontested", quantity="10", user=user)
        for proposal, user in zip((first, second) * 3, operators(fund, 6), strict=True)
    ]

    results = run_together(calls)

    booked = [value for status, value in results if status == "ok"]
    refused = [value for status, value in results if status == "error"]
    execution = Execution.objects.get()
    # The winner's proposal gets the fill back on every call; the other proposal never books.
    assert len(booked) == 3
    assert {e.pk for e, _ in booked} == {execution.pk}
    assert [created for _, created in booked].count(True) == 1
    assert len(refused) == 3
    assert all(isinstance(error, DuplicateExternalRef) for error in refused), refused
    loser = second if execution.proposal_id == first.pk else first
    loser.refresh_from_db()
    assert loser.executed_notional_usd == 0
    assert LedgerEntry.objects.filter(reference__startswith="execution:").count() == 2
    assert books.fund_cash_usd(fund.fund) == CASH - D("6000")
    assert_audit_chain_intact()
