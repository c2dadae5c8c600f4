"""Sales and transfers racing for the same coins (rules 12 and 15), on PostgreSQL with real
threads released together.

Final approvals lock the fund, so two sales approved at once count the account's coins one after
the other; fills lock the custody accounts they take from, and the account's running position
refuses to go below zero, so whatever the interleaving no account is overdrawn.
"""

from decimal import Decimal

import pytest
from django.utils import timezone

from governance import services
from governance.exceptions import ComplianceBlocked, ExecutionRefused
from governance.models import Proposal, ProposalState
from portfolio.models import AccountPosition, FundRole
from tests.factories import FundBuilder, UserFactory, otp_code
from tests.governance.test_execution_concurrency import assert_audit_chain_intact
from tests.threads import run_together

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
S = ProposalState


@pytest.fixture
def fund(settings) -> FundBuilder:
    """The Alem-like fund with 100 BNB in a cold multisig and an empty exchange account."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return FundBuilder.alem_like().with_custody_accounts()


def submitted(fund: FundBuilder, kind: str, **terms) -> Proposal:
    proposal = services.proposal_create(
        author=fund.users["manager"],
        fund=fund.fund,
        kind=kind,
        asset=fund.asset,
        rationale="Racing for the same coins.",
        **terms,
    )
    return services.proposal_submit(proposal_id=proposal.pk, actor=fund.users["manager"])


def sale(fund: FundBuilder, quantity: str) -> Proposal:
    return submitted(
        fund, "sell", quantity=D(quantity), limit_price_usd=D("590"), account=fund.cold
    )


def cold_balance(fund: FundBuilder) -> Decimal:
    return AccountPosition.objects.get(account=fund.cold, asset=fund.asset).quantity


def test_two_sales_of_the_same_coins_cannot_both_be_approved(fund):
    first, second = sale(fund, "60"), sale(fund, "60")
    for proposal in (first, second):
        fund.decide(proposal, "risk")
        fund.decide(proposal, "committee1")
    deciders = {first.pk: fund.users["committee2"], second.pk: fund.users["committee3"]}
    codes = {pk: otp_code(user) for pk, user in deciders.items()}

    results = run_together(
        [
            lambda pk=pk, user=user: services.decision_record(
                proposal_id=pk, user=user, verdict="approve", otp_token=codes[pk]
            )
            for pk, user in deciders.items()
        ]
    )

    outcomes = sorted(kind for kind, _ in results)
    assert outcomes == ["error", "ok"], results
    [error] = [value for kind, value in results if kind == "error"]
    assert isinstance(error, ComplianceBlocked) and "Not enough BNB" in str(error)
    states = sorted(Proposal.objects.filter(kind="sell").values_list("state", flat=True))
    assert states == [S.APPROVED, S.IN_REVIEW]
    assert_audit_chain_intact()


def test_a_transfer_and_a_sale_taking_the_same_coins_at_once_book_only_one(fund):
    # Together they take 100.01 of the 100 BNB: each alone fits, both do not.
    transfer = fund.approve_fully(
        submitted(
            fund,
            "transfer",
            quantity=D("60"),
            account=fund.cold,
            destination_account=fund.exchange,
        )
    )
    sold = fund.approve_fully(sale(fund, "40"))
    assert (transfer.state, sold.state) == (S.APPROVED, S.APPROVED)
    operators = []
    for i in range(2):
        user = UserFactory(username=f"operator{i}")
        services.role_grant(user=user, fund=fund.fund, role=FundRole.EXECUTE_TRADES)
        operators.append(user)
    now = timezone.now()
    calls = [
        (transfer, operators[0], {"fee_quantity": D("0.01")}, D("60")),
        (sold, operators[1], {"price_usd": D("600")}, D("40")),
    ]
    codes = [otp_code(user) for _, user, _, _ in calls]

    results = run_together(
        [
            lambda p=p, user=user, terms=terms, quantity=quantity, code=code: (
                services.execution_record(
                    proposal_id=p.pk,
                    actor=user,
                    quantity=quantity,
                    venue="OTC desk",
                    external_ref=f"race-{p.pk}",
                    executed_at=now,
                    otp_token=code,
                    **terms,
                )
            )
            for (p, user, terms, quantity), code in zip(calls, codes, strict=True)
        ]
    )

    outcomes = sorted(kind for kind, _ in results)
    assert outcomes == ["error", "ok"], results
    [error] = [value for kind, value in results if kind == "error"]
    assert isinstance(error, ExecutionRefused) and error.code == "insufficient_holdings"
    assert cold_balance(fund) in (D("39.99"), D("60"))  # the transfer's, or the sale's
    assert cold_balance(fund) >= 0
    assert_audit_chain_intact()
