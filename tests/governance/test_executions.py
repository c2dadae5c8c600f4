"""Executions of approved proposals (rule 10), service level.

Every refusal checks that nothing was booked: no execution row, no ledger entry, holdings, cash
and the proposal's state and executed notional as they were, and exactly one audit event, the
refusal's own. The fund of ``FundBuilder`` holds USD 25M and prices BNB at USD 600 (Binance) and
USD 600.01 (CoinGecko), both observed when the fund is built: a usable consensus of USD 600.005.
The fund tolerates fills within 2% of it (USD 588.0049 to USD 612.0051).
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from governance import services, tasks
from governance.exceptions import (
    ComplianceBlocked,
    DuplicateExternalRef,
    ExecutionRefused,
    GovernanceError,
    InvalidTransition,
    NotPermitted,
    SegregationOfDuties,
)
from governance.models import AuditEvent, Execution, Proposal, ProposalState
from governance.records import rows_json
from governance.selectors import reserved_notional_usd
from portfolio import selectors as books
from portfolio.models import Asset, Fund, FundRole, LedgerEntry, Price
from tests.factories import FundBuilder, PriceFactory, otp_code, otp_device
from tests.tampering import superuser_sql

D = Decimal
S = ProposalState
R = FundRole

NOTIONAL = D("500000.00")  # below the ministry threshold: risk, then two of the committee
CASH = D("25000000.00")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def approved(alem: FundBuilder, **terms) -> Proposal:
    proposal = alem.approve_fully(alem.proposal(submit=True, **terms))
    assert proposal.state == S.APPROVED
    return proposal


_refs = iter(range(1, 10_000))


def fill(
    alem: FundBuilder,
    proposal: Proposal,
    *,
    quantity: str | Decimal,
    price: str | Decimal = "600",
    fee: str | Decimal = "0",
    user: str = "treasury",
    ref: str | None = None,
    executed_at: dt.datetime | None = None,
    close: bool = False,
) -> tuple[Execution, bool]:
    return services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users[user],
        quantity=D(quantity),
        price_usd=D(price),
        fee_usd=D(fee),
        venue="Binance",
        external_ref=ref or f"order-{next(_refs)}",
        executed_at=executed_at or timezone.now(),
        otp_token=otp_code(alem.users[user]),
        close=close,
    )


def last_sequence() -> int:
    return AuditEvent.objects.aggregate(m=Max("sequence"))["m"] or 0


def events_after(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


@dataclass(frozen=True)
class Books:
    """What a refused fill must leave as it was."""

    executions: tuple
    ledger: tuple
    holdings: tuple
    cash: Decimal
    state: str
    executed_notional: Decimal
    updated_at: dt.datetime


def books_of(proposal: Proposal) -> Books:
    fresh = Proposal.objects.select_related("fund").get(pk=proposal.pk)
    return Books(
        executions=tuple(Execution.objects.order_by("pk").values_list("pk", flat=True)),
        ledger=tuple(LedgerEntry.objects.order_by("pk").values_list("pk", flat=True)),
        holdings=tuple(books.fund_holdings(fresh.fund)),
        cash=books.fund_cash_usd(fresh.fund),
        state=fresh.state,
        executed_notional=fresh.executed_notional_usd,
        updated_at=fresh.updated_at,
    )


def refuse_fill(alem, proposal, error_class, code, **fill_kwargs) -> GovernanceError:
    """Attempt a fill that must be refused with ``code``; check that nothing was booked and that
    the refusal, and only it, is in the audit log."""
    before = books_of(proposal)
    mark = last_sequence()
    fill_kwargs.setdefault("quantity", "1")

    with pytest.raises(error_class) as refused:
        fill(alem, proposal, **fill_kwargs)

    error = refused.value
    assert error.code == code
    assert books_of(proposal) == before
    events = events_after(mark)
    user = alem.users[fill_kwargs.get("user", "treasury")]
    assert [(e.action, e.actor_id, e.proposal_id) for e in events] == [
        ("execution.refused", user.pk, proposal.pk)
    ]
    assert events[0].payload["code"] == code
    assert events[0].payload["detail"] == error.detail
    return error


@pytest.fixture
def proposal(alem) -> Proposal:
    return approved(alem)


# ---------------------------------------------------------------------------------------------
# A fill books exactly what was bought
# ---------------------------------------------------------------------------------------------


def test_a_fill_books_the_asset_in_the_cash_out_and_the_fee(alem, proposal):
    executed_at = timezone.now()
    mark = last_sequence()

    execution, created = fill(
        alem,
        proposal,
        quantity="2.5",
        price="600.00",
        fee="1.25",
        ref="0xabc123",
        executed_at=executed_at,
    )

    assert created is True
    execution.refresh_from_db()
    assert execution.proposal_id == proposal.pk
    assert (execution.quantity, execution.price_usd, execution.fee_usd) == (
        D("2.5"),
        D("600"),
        D("1.25"),
    )
    assert execution.cost_usd == D("1501.25")
    assert (execution.venue, execution.external_ref) == ("Binance", "0xabc123")
    assert execution.executed_at == executed_at
    assert execution.recorded_by == alem.users["treasury"]
    assert D(execution.evidence["price_usd"]) == D("600.005")
    assert execution.evidence["usable"] is True
    entries = list(
        LedgerEntry.objects.filter(reference__startswith=f"execution:{execution.pk}:")
        .order_by("pk")
        .values_list("reference", "kind", "asset__symbol", "quantity", "value_usd")
    )
    assert entries == [
        (f"execution:{execution.pk}:asset", "buy", "BNB", D("2.5"), D("1500")),
        (f"execution:{execution.pk}:cash", "buy", None, D("-1500"), D("-1500")),
        (f"execution:{execution.pk}:fee", "fee", None, D("-1.25"), D("-1.25")),
    ]
    booked = LedgerEntry.objects.filter(reference__startswith=f"execution:{execution.pk}:")
    assert {(e.booked_at, e.booked_by_id, e.fund_id) for e in booked} == {
        (executed_at, alem.users["treasury"].pk, alem.fund.pk)
    }
    assert books.fund_holdings(alem.fund) == [
        books.Holding(alem.asset.pk, "BNB", D("2.5"), D("1500"))
    ]
    assert books.fund_cash_usd(alem.fund) == CASH - D("1501.25")
    proposal.refresh_from_db()
    assert proposal.state == S.APPROVED
    assert proposal.executed_notional_usd == D("1501.25")
    events = events_after(mark)
    assert [(e.action, e.actor_id) for e in events] == [
        ("execution.recorded", alem.users["treasury"].pk)
    ]
    payload = dict(events[0].payload)
    entries = LedgerEntry.objects.filter(reference__startswith=f"execution:{execution.pk}:")
    assert payload.pop("rows") == rows_json(execution, *entries)
    assert D(payload.pop("cost_usd")) == D("1501.25")
    assert D(payload.pop("executed_notional_usd")) == D("1501.25")
    assert payload == {
        "execution": execution.pk,
        "external_ref": "0xabc123",
        "venue": "Binance",
        "quantity": "2.5",
        "price_usd": "600.00",
        "fee_usd": "1.25",
        "executed_at": executed_at.isoformat(),
        "confirmed_by_device": otp_device(alem.users["treasury"]).persistent_id,
    }
    assert execution.confirmed_by_device == otp_device(alem.users["treasury"]).persistent_id


def test_a_fill_without_a_fee_books_no_fee_entry(alem, proposal):
    execution, _ = fill(alem, proposal, quantity="10", price="600")

    assert list(
        LedgerEntry.objects.filter(reference__startswith=f"execution:{execution.pk}:")
        .order_by("pk")
        .values_list("reference", "quantity")
    ) == [
        (f"execution:{execution.pk}:asset", D("10")),
        (f"execution:{execution.pk}:cash", D("-6000")),
    ]
    assert books.fund_cash_usd(alem.fund) == CASH - D("6000")


def test_cost_is_exact_decimal_arithmetic(alem, proposal):
    # 0.123456789 x 600.0012 = 74.0742215481468 exactly.
    execution, _ = fill(alem, proposal, quantity="0.123456789", price="600.0012", fee="0.0001")

    execution.refresh_from_db()
    assert execution.cost_usd == D("74.0743215481468")
    asset, cash, fee = LedgerEntry.objects.filter(
        reference__startswith=f"execution:{execution.pk}:"
    ).order_by("pk")
    assert (asset.quantity, asset.value_usd) == (D("0.123456789"), D("74.0742215481468"))
    assert (cash.quantity, cash.value_usd) == (D("-74.0742215481468"), D("-74.0742215481468"))
    assert (fee.quantity, fee.value_usd) == (D("-0.0001"), D("-0.0001"))
    proposal.refresh_from_db()
    assert proposal.executed_notional_usd == D("74.0743215481468")


def test_cost_keeps_all_28_decimals(db):
    # BNB at USD 612.34 so that a price of USD 612.3456789012 is within the tolerance.
    alem = FundBuilder.alem_like(prefix="own_", price_usd=D("612.34"))
    proposal = approved(alem)

    execution, _ = fill(
        alem,
        proposal,
        quantity="1.234567890123456789",
        price="612.3456789012",
        fee="0.000000000000000001",
    )

    # Exact product: 18 + 10 = 28 decimals, 31 significant digits.
    gross = D("755.9823128272702337431672002468")
    cost = D("755.9823128272702337441672002468")
    assert execution.cost_usd == cost
    execution.refresh_from_db()
    assert execution.cost_usd == cost
    asset, cash, fee = LedgerEntry.objects.filter(
        reference__startswith=f"execution:{execution.pk}:"
    ).order_by("pk")
    assert (asset.quantity, asset.value_usd) == (D("1.234567890123456789"), gross)
    assert (cash.quantity, cash.value_usd) == (gross.copy_negate(), gross.copy_negate())
    assert (fee.quantity, fee.value_usd) == (D("-1E-18"), D("-1E-18"))
    proposal.refresh_from_db()
    assert proposal.executed_notional_usd == cost
    assert books.fund_cash_usd(alem.fund) == D("24999244.0176871727297662558327997532")


@pytest.mark.parametrize("off_by", ["1E-28", "-1E-28"])
def test_the_database_holds_the_cost_to_the_last_digit(alem, proposal, off_by):
    execution, _ = fill(alem, proposal, quantity="0.123456789", price="600.0012", fee="0.0001")

    # Past the append-only trigger, as a superuser could go: the check still holds.
    with (
        superuser_sql(),
        pytest.raises(IntegrityError, match="cost_by_kind"),
        transaction.atomic(),
    ):
        Execution.objects.filter(pk=execution.pk).update(cost_usd=F("cost_usd") + D(off_by))

    execution.refresh_from_db()
    assert execution.cost_usd == D("74.0743215481468")


def test_a_committee_member_who_did_not_approve_may_execute(alem, proposal):
    # committee3 holds both roles but took no part in this proposal's approval.
    services.role_grant(user=alem.users["committee3"], fund=alem.fund, role=R.EXECUTE_TRADES)

    execution, created = fill(alem, proposal, quantity="1", user="committee3")

    assert created is True
    assert execution.recorded_by == alem.users["committee3"]


# ---------------------------------------------------------------------------------------------
# The approved notional: total cost, fees included, never above it
# ---------------------------------------------------------------------------------------------


def test_a_single_fill_above_the_notional_is_refused(alem, proposal):
    # 834 x 600 = 500,400 > 500,000.
    error = refuse_fill(
        alem, proposal, ExecutionRefused, "over_notional", quantity="834", price="600"
    )

    assert D(error.context["remaining_usd"]) == NOTIONAL
    assert error.detail.startswith("The fill costs USD 500400 but only USD 500000")


def test_the_fee_counts_towards_the_notional(alem, proposal):
    # 833 x 600 = 499,800, plus a fee of 200.01: one cent over.
    refuse_fill(
        alem,
        proposal,
        ExecutionRefused,
        "over_notional",
        quantity="833",
        price="600",
        fee="200.01",
    )


def test_fills_together_never_exceed_the_notional_and_the_last_one_executes(alem, proposal):
    first, _ = fill(alem, proposal, quantity="500", price="600")  # USD 300,000
    # 333 x 600 + 200.01 = 200,000.01: one cent more than remains.
    refuse_fill(
        alem,
        proposal,
        ExecutionRefused,
        "over_notional",
        quantity="333",
        price="600",
        fee="200.01",
    )
    mark = last_sequence()

    # Exactly what remains is allowed, and it is the last fill.
    last, created = fill(alem, proposal, quantity="333", price="600", fee="200")

    assert created is True
    proposal.refresh_from_db()
    assert proposal.executed_notional_usd == NOTIONAL
    assert proposal.state == S.EXECUTED
    assert [e.action for e in events_after(mark)] == ["execution.recorded", "proposal.executed"]
    executed = events_after(mark)[1]
    assert executed.actor_id == alem.users["treasury"].pk
    assert executed.payload["reason"] == "fully filled"
    assert D(executed.payload["unspent_usd"]) == 0
    assert D(executed.payload["executed_notional_usd"]) == NOTIONAL
    assert books.fund_holdings(alem.fund) == [
        books.Holding(alem.asset.pk, "BNB", D("833"), D("499800"))
    ]
    assert books.fund_cash_usd(alem.fund) == CASH - NOTIONAL
    assert list(Execution.objects.order_by("pk")) == [first, last]


def test_a_fill_of_exactly_the_notional_executes_the_proposal(alem):
    proposal = approved(alem, notional_usd=D("60000.00"))

    fill(alem, proposal, quantity="100", price="600")

    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED
    assert proposal.executed_notional_usd == D("60000")


# ---------------------------------------------------------------------------------------------
# Prices: the limit price, the consensus and the fund's tolerance
# ---------------------------------------------------------------------------------------------


def test_a_price_above_the_limit_price_is_refused(alem):
    proposal = approved(alem, limit_price_usd=D("605.00"))

    refuse_fill(alem, proposal, ExecutionRefused, "above_limit_price", price="605.0000000001")


def test_a_price_exactly_at_the_limit_price_is_accepted(alem):
    proposal = approved(alem, limit_price_usd=D("605.00"))

    execution, created = fill(alem, proposal, quantity="1", price="605.00")

    assert created is True
    assert execution.price_usd == D("605")


@pytest.mark.parametrize("price", ["612.0052", "588.0048", "640.00", "500.00"])
def test_a_price_outside_the_tolerance_of_the_consensus_is_refused(alem, proposal, price):
    error = refuse_fill(alem, proposal, ExecutionRefused, "price_outside_tolerance", price=price)

    assert "the fund tolerates 2.00%" in error.detail


@pytest.mark.parametrize("price", ["612.0051", "588.0049", "600.005"])
def test_a_price_exactly_at_the_tolerance_is_accepted(alem, proposal, price):
    # 600.005 x 1.02 = 612.0051 and 600.005 x 0.98 = 588.0049: a deviation of exactly 2%.
    execution, created = fill(alem, proposal, quantity="1", price=price)

    assert created is True
    assert D(execution.evidence["price_usd"]) == D("600.005")


def test_a_stale_consensus_is_refused(alem, proposal):
    # Both quotes are now an hour old, beyond the 15-minute staleness limit.
    Price.objects.filter(asset=alem.asset).update(
        observed_at=F("observed_at") - dt.timedelta(hours=1)
    )

    error = refuse_fill(alem, proposal, ExecutionRefused, "consensus_unusable")

    assert "(stale)" in error.detail
    assert error.context["consensus"]["flags"] == ["stale"]


def test_a_divergent_consensus_is_refused(alem, proposal):
    # CoinGecko now says USD 700: the two fresh sources are 15% apart.
    PriceFactory(asset=alem.asset, source=Price.Source.COINGECKO, price=D("700.00"))

    error = refuse_fill(alem, proposal, ExecutionRefused, "consensus_unusable")

    assert error.context["consensus"]["flags"] == ["divergent"]


def test_a_single_source_consensus_is_refused(alem, proposal):
    Price.objects.filter(asset=alem.asset, source=Price.Source.COINGECKO).update(
        observed_at=F("observed_at") - dt.timedelta(hours=1)
    )

    error = refuse_fill(alem, proposal, ExecutionRefused, "consensus_unusable")

    assert error.context["consensus"]["flags"] == ["single_source"]


def test_a_fill_before_any_price_was_observed_is_refused(alem, proposal):
    # The approval is moved two hours back; an hour ago no price of BNB had been observed.
    now = timezone.now()
    Proposal.objects.filter(pk=proposal.pk).update(decided_at=now - dt.timedelta(hours=2))

    error = refuse_fill(
        alem,
        proposal,
        ExecutionRefused,
        "consensus_unusable",
        executed_at=now - dt.timedelta(hours=1),
    )

    assert error.context["consensus"]["flags"] == ["missing"]


def test_the_consensus_is_taken_at_the_execution_time(alem, proposal):
    # Prices observed after the fill do not count: a later divergent quote leaves an earlier
    # fill's consensus usable.
    executed_at = timezone.now()
    PriceFactory(
        asset=alem.asset,
        source=Price.Source.COINGECKO,
        price=D("700.00"),
        observed_at=executed_at + dt.timedelta(microseconds=1),
    )

    execution, created = fill(alem, proposal, quantity="1", executed_at=executed_at)

    assert created is True
    assert D(execution.evidence["price_usd"]) == D("600.005")


# ---------------------------------------------------------------------------------------------
# Fees: at most the fund's share (1%) of the fill's value, quantity x price
# ---------------------------------------------------------------------------------------------


def test_a_tiny_fill_cannot_carry_a_large_fee(alem, proposal):
    # Red-team finding 8: 0.000001 BNB (USD 0.0006) with a USD 99,000 fee was booked; its cost
    # was well within the notional.
    error = refuse_fill(
        alem, proposal, ExecutionRefused, "fee_above_limit", quantity="0.000001", fee="99000"
    )

    assert error.detail == (
        "The fee of USD 99000 is above the fund's limit of 1.00% of the fill's value of "
        "USD 0.0006: at most USD 0.000006."
    )
    assert {name: D(value) for name, value in error.context.items()} == {
        "fee_usd": D("99000"),
        "value_usd": D("0.0006"),
        "max_fee_usd": D("0.000006"),
    }
    assert Execution.objects.count() == 0
    assert Proposal.objects.get(pk=proposal.pk).executed_notional_usd == 0


@pytest.mark.parametrize(
    ("quantity", "price", "fee"),
    [
        ("10", "600", "60"),
        # 1% of 0.123456789 x 600.0012 = 74.0742215481468, to the last digit.
        ("0.123456789", "600.0012", "0.740742215481468"),
    ],
)
def test_a_fee_of_exactly_the_funds_share_of_the_value_is_accepted(
    alem, proposal, quantity, price, fee
):
    execution, created = fill(alem, proposal, quantity=quantity, price=price, fee=fee)

    assert created is True
    assert execution.fee_usd == D(fee)
    assert LedgerEntry.objects.get(reference=f"execution:{execution.pk}:fee").quantity == -D(fee)


@pytest.mark.parametrize(
    ("quantity", "price", "fee"),
    [
        ("10", "600", "60.01"),
        ("0.123456789", "600.0012", "0.740742215481469"),
    ],
    ids=["one-cent", "last-digit"],
)
def test_a_fee_just_above_the_funds_share_of_the_value_is_refused(
    alem, proposal, quantity, price, fee
):
    error = refuse_fill(
        alem, proposal, ExecutionRefused, "fee_above_limit", quantity=quantity, price=price, fee=fee
    )

    assert D(error.context["max_fee_usd"]) == D(quantity) * D(price) / 100


def test_the_one_cent_refusal_names_the_fee_the_limit_and_the_value(alem, proposal):
    error = refuse_fill(
        alem, proposal, ExecutionRefused, "fee_above_limit", quantity="10", fee="60.01"
    )

    assert error.detail == (
        "The fee of USD 60.01 is above the fund's limit of 1.00% of the fill's value of "
        "USD 6000: at most USD 60."
    )


def test_a_fund_that_allows_no_fee_refuses_any_fee_and_books_a_fill_without_one(alem, proposal):
    Fund.objects.filter(pk=alem.fund.pk).update(max_fee_share=D("0"))

    refuse_fill(alem, proposal, ExecutionRefused, "fee_above_limit", quantity="10", fee="0.01")
    execution, created = fill(alem, proposal, quantity="10", fee="0")

    assert created is True
    assert execution.cost_usd == D("6000")


@pytest.mark.parametrize("share", ["-0.000001", "1", "1.5"])
def test_the_database_refuses_a_fee_share_outside_0_to_1(alem, share):
    with pytest.raises(IntegrityError), transaction.atomic():
        Fund.objects.filter(pk=alem.fund.pk).update(max_fee_share=D(share))

    assert Fund.objects.get(pk=alem.fund.pk).max_fee_share == D("0.01")


@pytest.mark.parametrize("share", ["0", "0.999999"])
def test_the_database_accepts_a_fee_share_from_0_to_just_below_1(alem, share):
    Fund.objects.filter(pk=alem.fund.pk).update(max_fee_share=D(share))

    assert Fund.objects.get(pk=alem.fund.pk).max_fee_share == D(share)


# ---------------------------------------------------------------------------------------------
# Times: within the approval's validity, never before it, never in the future
# ---------------------------------------------------------------------------------------------


def test_a_fill_timed_before_the_approval_is_refused(alem, proposal):
    refuse_fill(
        alem,
        proposal,
        ExecutionRefused,
        "executed_before_approval",
        executed_at=proposal.decided_at - dt.timedelta(microseconds=1),
    )


def test_a_fill_timed_at_the_moment_of_approval_is_accepted(alem, proposal):
    execution, created = fill(alem, proposal, quantity="1", executed_at=proposal.decided_at)

    assert created is True
    assert execution.executed_at == proposal.decided_at


def test_a_fill_time_without_its_offset_is_invalid_input(alem, proposal):
    before = books_of(proposal)
    mark = last_sequence()

    with pytest.raises(ValidationError):
        fill(alem, proposal, quantity="1", executed_at=dt.datetime(2025, 6, 30, 9, 30))

    assert books_of(proposal) == before
    assert events_after(mark) == []


def test_a_fill_timed_in_the_future_is_refused(alem, proposal):
    refuse_fill(
        alem,
        proposal,
        ExecutionRefused,
        "executed_in_future",
        executed_at=timezone.now() + dt.timedelta(minutes=1),
    )


def test_a_fill_after_the_approval_expired_is_refused_before_the_task_runs(alem, proposal):
    # The window has passed but the expiry task has not run yet: still approved, no fill.
    Proposal.objects.filter(pk=proposal.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    refuse_fill(alem, proposal, ExecutionRefused, "approval_expired")

    assert Proposal.objects.get(pk=proposal.pk).state == S.APPROVED


# ---------------------------------------------------------------------------------------------
# Only approved proposals, only treasury operators, never the author or an approver
# ---------------------------------------------------------------------------------------------


def _in_state(alem: FundBuilder, state: str) -> Proposal:
    if state == S.DRAFT:
        return alem.proposal()
    proposal = alem.proposal(submit=True)
    if state == S.CHANGES_REQUESTED:
        alem.decide(proposal, "risk", "request_changes")
    elif state == S.REJECTED:
        alem.decide(proposal, "risk", "reject")
    elif state == S.WITHDRAWN:
        services.proposal_withdraw(proposal_id=proposal.pk, actor=alem.users["manager"])
    elif state in (S.EXECUTED, S.EXPIRED):
        alem.approve_fully(proposal)
        if state == S.EXECUTED:
            fill(alem, proposal, quantity="1", close=True)
        else:
            services.proposals_expire_due(now=timezone.now() + dt.timedelta(days=6))
    proposal.refresh_from_db()
    assert proposal.state == state
    return proposal


@pytest.mark.parametrize(
    "state",
    [S.DRAFT, S.IN_REVIEW, S.CHANGES_REQUESTED, S.REJECTED, S.WITHDRAWN, S.EXECUTED, S.EXPIRED],
)
def test_a_proposal_that_is_not_approved_accepts_no_fill(alem, state):
    proposal = _in_state(alem, state)

    error = refuse_fill(alem, proposal, InvalidTransition, "invalid_state")

    assert error.detail.startswith(f"Cannot execute a proposal that is {state}")


def test_the_author_cannot_execute_their_own_proposal(alem, proposal):
    services.role_grant(user=alem.users["manager"], fund=alem.fund, role=R.EXECUTE_TRADES)

    error = refuse_fill(
        alem, proposal, SegregationOfDuties, "segregation_of_duties", user="manager"
    )

    assert error.detail == "The author of a proposal cannot execute it."


@pytest.mark.parametrize("approver", ["risk", "committee1", "committee2"])
def test_an_approver_cannot_execute_the_proposal(alem, proposal, approver):
    services.role_grant(user=alem.users[approver], fund=alem.fund, role=R.EXECUTE_TRADES)

    error = refuse_fill(alem, proposal, SegregationOfDuties, "segregation_of_duties", user=approver)

    assert error.detail == "Someone who approved a proposal cannot execute it."


@pytest.mark.parametrize("username", ["auditor", "manager2", "committee3", "fundadmin"])
def test_a_user_without_execute_trades_cannot_execute(alem, proposal, username):
    error = refuse_fill(alem, proposal, NotPermitted, "not_permitted", user=username)

    assert error.status_code == 403


def test_execute_trades_on_another_fund_does_not_count(alem, proposal):
    other = FundBuilder.alem_like(prefix="other_")
    alem.users["other_treasury"] = other.users["treasury"]

    refuse_fill(alem, proposal, NotPermitted, "not_permitted", user="other_treasury")


def test_the_refusal_records_what_was_attempted(alem, proposal):
    mark = last_sequence()

    with pytest.raises(ExecutionRefused):
        fill(alem, proposal, quantity="1.5", price="700.00", fee="0.5", ref="order-xyz")

    (event,) = events_after(mark)
    assert event.payload == {
        "code": "above_limit_price",
        "detail": "Price USD 700.00 is above the limit price USD 650.0000000000.",
        "external_ref": "order-xyz",
        "quantity": "1.5",
        "price_usd": "700.00",
        "fee_usd": "0.5",
    }


# ---------------------------------------------------------------------------------------------
# The same external reference twice books nothing twice
# ---------------------------------------------------------------------------------------------


def test_the_same_external_reference_again_returns_the_booked_fill(alem, proposal):
    first, created = fill(alem, proposal, quantity="3", price="600", fee="1", ref="0xfeed")
    assert created is True
    before = books_of(proposal)
    mark = last_sequence()

    again, created = fill(alem, proposal, quantity="3", price="600", fee="1", ref="0xfeed")

    assert created is False
    assert again == first
    assert books_of(proposal) == before
    assert Execution.objects.count() == 1
    assert LedgerEntry.objects.filter(reference__startswith="execution:").count() == 3
    assert events_after(mark) == []


def test_retrying_the_last_fill_after_it_executed_the_proposal_returns_it(alem):
    proposal = approved(alem, notional_usd=D("6000.00"))
    last, _ = fill(alem, proposal, quantity="10", price="600", ref="last-fill")
    assert Proposal.objects.get(pk=proposal.pk).state == S.EXECUTED
    mark = last_sequence()

    again, created = fill(alem, proposal, quantity="10", price="600", ref="last-fill")

    assert (again, created) == (last, False)
    assert events_after(mark) == []


def test_the_same_external_reference_on_another_proposal_is_refused(alem, proposal):
    fill(alem, proposal, quantity="1", ref="0xshared")
    second = approved(alem, notional_usd=D("100000.00"))
    before = books_of(second)
    mark = last_sequence()

    with pytest.raises(DuplicateExternalRef) as refused:
        fill(alem, second, quantity="1", ref="0xshared")

    assert refused.value.code == "duplicate_external_ref"
    assert books_of(second) == before
    assert Execution.objects.get().proposal_id == proposal.pk
    [event] = AuditEvent.objects.filter(sequence__gt=mark)
    assert (event.action, event.payload["code"]) == ("execution.refused", "duplicate_external_ref")


# ---------------------------------------------------------------------------------------------
# Closing a partly executed proposal
# ---------------------------------------------------------------------------------------------


def test_close_with_a_fill_executes_the_proposal_and_releases_the_rest(alem, proposal):
    mark = last_sequence()

    fill(alem, proposal, quantity="100", price="600", close=True)

    proposal.refresh_from_db()
    assert proposal.state == S.EXECUTED
    assert proposal.executed_notional_usd == D("60000")
    events = events_after(mark)
    assert [e.action for e in events] == ["execution.recorded", "proposal.executed"]
    assert events[1].payload["reason"] == "closed with the fill"
    assert D(events[1].payload["unspent_usd"]) == D("440000")
    assert reserved_notional_usd(alem.fund) == 0


def test_proposal_close_executes_a_partly_filled_proposal(alem, proposal):
    fill(alem, proposal, quantity="100", price="600")
    assert reserved_notional_usd(alem.fund) == D("440000")
    mark = last_sequence()

    closed = services.proposal_close(
        proposal_id=proposal.pk, actor=alem.users["treasury"], reason="Market moved away."
    )

    assert closed.state == S.EXECUTED
    assert Proposal.objects.get(pk=proposal.pk).state == S.EXECUTED
    events = events_after(mark)
    assert [(e.action, e.actor_id) for e in events] == [
        ("proposal.executed", alem.users["treasury"].pk)
    ]
    assert events[0].payload["reason"] == "Market moved away."
    assert D(events[0].payload["unspent_usd"]) == D("440000")
    assert D(events[0].payload["executed_notional_usd"]) == D("60000")
    assert reserved_notional_usd(alem.fund) == 0
    refuse_fill(alem, proposal, InvalidTransition, "invalid_state")


def _refuse_close(alem, proposal, error_class, user="treasury"):
    before = books_of(proposal)
    mark = last_sequence()
    with pytest.raises(error_class) as refused:
        services.proposal_close(proposal_id=proposal.pk, actor=alem.users[user])
    assert books_of(proposal) == before
    # Refusals to close are not audited (see the report on proposal_close).
    assert events_after(mark) == []
    return refused.value


def test_proposal_close_refuses_when_nothing_was_executed(alem, proposal):
    error = _refuse_close(alem, proposal, InvalidTransition)

    assert error.detail.startswith("Nothing has been executed")


def test_proposal_close_needs_execute_trades(alem, proposal):
    fill(alem, proposal, quantity="1")

    _refuse_close(alem, proposal, NotPermitted, user="auditor")


def test_the_author_cannot_close_their_proposal(alem, proposal):
    fill(alem, proposal, quantity="1")
    services.role_grant(user=alem.users["manager"], fund=alem.fund, role=R.EXECUTE_TRADES)

    _refuse_close(alem, proposal, SegregationOfDuties, user="manager")


def test_an_approver_cannot_close_the_proposal_they_approved(alem, proposal):
    fill(alem, proposal, quantity="1")
    services.role_grant(user=alem.users["risk"], fund=alem.fund, role=R.EXECUTE_TRADES)

    _refuse_close(alem, proposal, SegregationOfDuties, user="risk")


def test_proposal_close_refuses_once_the_approval_has_expired(alem, proposal):
    fill(alem, proposal, quantity="1")
    Proposal.objects.filter(pk=proposal.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    error = _refuse_close(alem, proposal, ExecutionRefused)

    assert error.code == "approval_expired"
    assert Proposal.objects.get(pk=proposal.pk).state == S.APPROVED


def test_proposal_close_refuses_a_proposal_that_is_not_approved(alem):
    proposal = alem.proposal(submit=True)

    _refuse_close(alem, proposal, InvalidTransition)


# ---------------------------------------------------------------------------------------------
# Expiry (rule 9)
# ---------------------------------------------------------------------------------------------


def test_expiry_expires_approved_proposals_past_their_window_only(alem):
    due = approved(alem)
    partly = approved(alem, notional_usd=D("100000.00"))
    fill(alem, partly, quantity="10", price="600")
    fresh = approved(alem, notional_usd=D("200000.00"))
    in_review = alem.proposal(submit=True)
    executed = approved(alem, notional_usd=D("6000.00"))
    fill(alem, executed, quantity="10", price="600")
    now = timezone.now()
    Proposal.objects.filter(pk__in=[due.pk, partly.pk, executed.pk]).update(
        approval_expires_at=now - dt.timedelta(seconds=1)
    )
    Proposal.objects.filter(pk=fresh.pk).update(approval_expires_at=now + dt.timedelta(hours=1))
    mark = last_sequence()

    expired = services.proposals_expire_due(now=now)

    assert sorted(expired) == sorted([due.pk, partly.pk])
    states = dict(Proposal.objects.values_list("pk", "state"))
    assert states == {
        due.pk: S.EXPIRED,
        partly.pk: S.EXPIRED,
        fresh.pk: S.APPROVED,
        in_review.pk: S.IN_REVIEW,
        executed.pk: S.EXECUTED,
    }
    assert Proposal.objects.get(pk=partly.pk).executed_notional_usd == D("6000")
    events = events_after(mark)
    assert sorted((e.action, e.actor_id, e.proposal_id) for e in events) == sorted(
        [("proposal.expired", None, due.pk), ("proposal.expired", None, partly.pk)]
    )
    partly_event = next(e for e in events if e.proposal_id == partly.pk)
    assert D(partly_event.payload["executed_notional_usd"]) == D("6000")
    # Only the fresh approval still reserves cash.
    assert reserved_notional_usd(alem.fund) == D("200000.00")


def test_expiry_counts_the_end_of_the_window_as_expired(alem, proposal):
    proposal.refresh_from_db()

    assert (
        services.proposals_expire_due(
            now=proposal.approval_expires_at - dt.timedelta(microseconds=1)
        )
        == []
    )
    assert services.proposals_expire_due(now=proposal.approval_expires_at) == [proposal.pk]


def test_expiry_is_idempotent(alem, proposal):
    later = timezone.now() + dt.timedelta(days=6)
    assert services.proposals_expire_due(now=later) == [proposal.pk]
    mark = last_sequence()

    assert services.proposals_expire_due(now=later) == []
    assert events_after(mark) == []


def test_an_expired_proposal_accepts_no_fill(alem, proposal):
    services.proposals_expire_due(now=timezone.now() + dt.timedelta(days=6))

    refuse_fill(alem, proposal, InvalidTransition, "invalid_state")


def test_the_expiry_task_expires_due_proposals(alem, proposal):
    Proposal.objects.filter(pk=proposal.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    assert tasks.proposals_expire() == [proposal.pk]

    assert Proposal.objects.get(pk=proposal.pk).state == S.EXPIRED
    assert tasks.proposals_expire() == []


# ---------------------------------------------------------------------------------------------
# Compliance counts what fills bought and what approvals still reserve
# ---------------------------------------------------------------------------------------------


def _cash_check(report: dict) -> dict:
    return next(c for c in report["checks"] if c["rule"] == "cash")


@pytest.fixture
def small_fund(db) -> FundBuilder:
    """USD 1M of cash, no concentration limit to speak of: only cash can block."""
    builder = FundBuilder.alem_like(prefix="own_", cash_usd=D("1000000.00"))
    Fund.objects.filter(pk=builder.fund.pk).update(max_asset_share=D("1"))
    builder.fund.refresh_from_db()
    return builder


def _partly_filled(fund: FundBuilder) -> Proposal:
    """A USD 600,000 proposal approved and a quarter filled: USD 850,000 cash remains, of which
    USD 450,000 is still reserved for it, so USD 400,000 is available."""
    first = approved(fund, notional_usd=D("600000.00"))
    fill(fund, first, quantity="250", price="600")
    assert books.fund_cash_usd(fund.fund) == D("850000.00")
    assert reserved_notional_usd(fund.fund) == D("450000.00")
    return first


def test_submission_nets_only_the_unexecuted_rest_of_approved_proposals(small_fund):
    _partly_filled(small_fund)
    over = small_fund.proposal(notional_usd=D("400000.01"))

    with pytest.raises(ComplianceBlocked) as blocked:
        services.proposal_submit(proposal_id=over.pk, actor=small_fund.users["manager"])

    cash = _cash_check(blocked.value.context)
    assert cash["outcome"] == "block"
    assert D(cash["values"]["cash_usd"]) == D("850000")
    assert D(cash["values"]["reserved_usd"]) == D("450000")
    assert D(cash["values"]["available_usd"]) == D("400000")
    assert Proposal.objects.get(pk=over.pk).state == S.DRAFT
    # The full USD 400,000 fits: the filled quarter no longer counts as reserved.
    fits = small_fund.proposal(notional_usd=D("400000.00"))
    fits = services.proposal_submit(proposal_id=fits.pk, actor=small_fund.users["manager"])
    assert fits.state == S.IN_REVIEW
    assert _cash_check(fits.compliance)["outcome"] == "warn"


def test_final_approval_nets_the_unexecuted_rest_of_approved_proposals(small_fund):
    # Both submitted while nothing was reserved.
    later = small_fund.proposal(notional_usd=D("400000.01"), submit=True)
    assert later.state == S.IN_REVIEW
    _partly_filled(small_fund)
    small_fund.decide(later, "risk")
    small_fund.decide(later, "committee1")
    mark = last_sequence()

    with pytest.raises(ComplianceBlocked) as blocked:
        small_fund.decide(later, "committee2")

    cash = _cash_check(blocked.value.context)
    assert cash["outcome"] == "block"
    assert D(cash["values"]["available_usd"]) == D("400000")
    assert Proposal.objects.get(pk=later.pk).state == S.IN_REVIEW
    assert [e.action for e in events_after(mark)] == ["decision.refused"]


def test_final_approval_passes_when_the_rest_fits(small_fund):
    later = small_fund.proposal(notional_usd=D("400000.00"), submit=True)
    _partly_filled(small_fund)

    approved_later = small_fund.approve_fully(later)

    assert approved_later.state == S.APPROVED
    assert D(_cash_check(approved_later.compliance)["values"]["reserved_usd"]) == D("450000")


def test_holdings_bought_by_fills_count_in_post_trade_concentration(db):
    # USD 1M cash, at most 40% in one asset. USD 300,000 of BNB bought: 500 BNB now worth
    # 500 x 600.005 = 300,002.50, cash 700,000. Another USD 100,000 makes
    # 400,002.50 / 1,000,002.50 = 40.0001% > 40%; without the fills it would be 10%.
    fund = FundBuilder.alem_like(prefix="own_", cash_usd=D("1000000.00"))
    first = approved(fund, notional_usd=D("300000.00"))
    fill(fund, first, quantity="500", price="600")
    assert Proposal.objects.get(pk=first.pk).state == S.EXECUTED
    over = fund.proposal(notional_usd=D("100000.00"))

    with pytest.raises(ComplianceBlocked) as blocked:
        services.proposal_submit(proposal_id=over.pk, actor=fund.users["manager"])

    report = blocked.value.context
    concentration = next(c for c in report["checks"] if c["rule"] == "concentration")
    assert concentration["outcome"] == "block"
    assert concentration["values"]["post_trade_share"] == "0.400001"
    assert [c["rule"] for c in report["checks"] if c["outcome"] == "block"] == ["concentration"]
    # USD 99,000 stays just under: 399,002.50 / 1,000,002.50 = 39.90%.
    under = fund.proposal(notional_usd=D("99000.00"), submit=True)
    concentration = next(c for c in under.compliance["checks"] if c["rule"] == "concentration")
    assert (concentration["outcome"], concentration["values"]["post_trade_share"]) == (
        "warn",
        "0.399002",
    )


# ---------------------------------------------------------------------------------------------
# One reference, one fill: the same hash typed differently is the same fill
# ---------------------------------------------------------------------------------------------

TX_HASH = "9f" * 32


@pytest.fixture
def on_bnb_chain(alem):
    """BNB on its chain, whose transaction hashes are written 0x-prefixed in lower case."""
    Asset.objects.filter(pk=alem.asset.pk).update(chain="BNB Smart Chain")


@pytest.mark.parametrize(
    "retyped",
    [f"0x{TX_HASH.upper()}", TX_HASH, f"0x{TX_HASH[:10]}\u200b{TX_HASH[10:]}", f" 0x{TX_HASH} "],
)
def test_the_same_hash_typed_differently_books_nothing_twice(alem, proposal, on_bnb_chain, retyped):
    first, created = fill(alem, proposal, quantity="100", ref=f"0x{TX_HASH}")
    before = books_of(proposal)

    again, created_again = fill(alem, proposal, quantity="100", ref=retyped)

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert first.external_ref == f"0x{TX_HASH}"
    assert books_of(proposal) == before
    assert Execution.objects.count() == 1


def test_the_same_hash_in_other_case_is_refused_on_another_proposal(alem, proposal, on_bnb_chain):
    fill(alem, proposal, quantity="100", ref=f"0x{TX_HASH}")
    other = approved(alem)

    with pytest.raises(DuplicateExternalRef):
        fill(alem, other, quantity="100", ref=f"0X{TX_HASH.upper()}")

    assert Execution.objects.filter(proposal=other).count() == 0


def test_the_database_refuses_a_reference_booked_in_another_case(alem, proposal):
    booked, _ = fill(alem, proposal, quantity="100", ref="ORDER-abc")
    copy = {
        f.attname: getattr(booked, f.attname)
        for f in Execution._meta.concrete_fields
        if not f.primary_key
    }

    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(**{**copy, "external_ref": "order-ABC"})
