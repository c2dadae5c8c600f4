"""Pre-trade compliance as pure checks: each limit at its exact boundaries, in Decimal."""

from dataclasses import replace
from decimal import Decimal

import pytest

from governance.compliance import (
    BLOCK,
    PASS,
    WARN,
    ComplianceFacts,
    check_cash,
    check_concentration,
    check_limit_price,
    check_market_price,
    check_single_proposal_limit,
    check_whitelist,
    evaluate,
    post_trade_share,
)

D = Decimal

# A fund of USD 10M cash and nothing else, limits as Alem's: 40% per asset, USD 5M per proposal.
BASE = ComplianceFacts(
    asset_symbol="BNB",
    notional_usd=D("1000000.00"),
    whitelisted=True,
    max_proposal_notional_usd=D("5000000.00"),
    max_asset_share=D("0.40"),
    cash_usd=D("10000000.00"),
    reserved_usd=D("0.00"),
    asset_value_usd=D("0"),
    holdings_value_usd=D("0"),
    warn_at=D("0.90"),
    market_price_usd=D("600.005"),
    price_flags=(),
    limit_price_usd=D("650.00"),
)


def facts(**changes) -> ComplianceFacts:
    return replace(BASE, **changes)


# ---------------------------------------------------------------------------------------------
# Whitelist
# ---------------------------------------------------------------------------------------------


def test_a_whitelisted_asset_passes():
    check = check_whitelist(BASE)

    assert (check.rule, check.outcome) == ("whitelist", PASS)


def test_an_asset_off_the_whitelist_blocks():
    check = check_whitelist(facts(asset_symbol="SOL", whitelisted=False))

    assert (check.rule, check.outcome) == ("whitelist", BLOCK)
    assert check.message == "SOL is not on the fund's whitelist."


# ---------------------------------------------------------------------------------------------
# Single-proposal limit (USD 5M; warns from 90%, i.e. USD 4.5M)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional", "outcome"),
    [
        ("0.01", PASS),
        ("4499999.99", PASS),
        ("4500000.00", WARN),  # exactly 90% of the limit
        ("5000000.00", WARN),  # exactly the limit is allowed
        ("5000000.01", BLOCK),
        ("9000000.00", BLOCK),
    ],
)
def test_single_proposal_limit_boundaries(notional, outcome):
    check = check_single_proposal_limit(facts(notional_usd=D(notional)))

    assert (check.rule, check.outcome) == ("single_proposal_limit", outcome)
    assert check.values == {"notional_usd": D(notional), "limit_usd": D("5000000.00")}


def test_single_proposal_limit_block_names_both_amounts():
    check = check_single_proposal_limit(facts(notional_usd=D("5000000.01")))

    assert check.message == (
        "Notional USD 5000000.01 exceeds the single-proposal limit of USD 5000000.00."
    )


# ---------------------------------------------------------------------------------------------
# Cash (USD 10M, of which USD 4M reserved by approved proposals: USD 6M available)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional", "outcome"),
    [
        ("5399999.99", PASS),
        ("5400000.00", WARN),  # 90% of what is available
        ("6000000.00", WARN),  # every available dollar is still enough
        ("6000000.01", BLOCK),  # one cent more than is available
    ],
)
def test_cash_boundaries_count_cash_reserved_by_approved_proposals(notional, outcome):
    check = check_cash(facts(notional_usd=D(notional), reserved_usd=D("4000000.00")))

    assert (check.rule, check.outcome) == ("cash", outcome)
    assert check.values == {
        "cash_usd": D("10000000.00"),
        "reserved_usd": D("4000000.00"),
        "available_usd": D("6000000.00"),
        "notional_usd": D(notional),
    }


def test_cash_block_explains_the_reservation():
    check = check_cash(facts(notional_usd=D("6000000.01"), reserved_usd=D("4000000.00")))

    assert check.message == (
        "Not enough cash: USD 6000000.00 available after USD 4000000.00 reserved for approved "
        "proposals, USD 6000000.01 needed."
    )


def test_cash_blocks_when_everything_is_reserved():
    check = check_cash(facts(notional_usd=D("0.01"), reserved_usd=D("10000000.00")))

    assert check.outcome == BLOCK
    assert check.values["available_usd"] == D("0.00")


# ---------------------------------------------------------------------------------------------
# Post-trade concentration (limit 40%; warns from 36%)
# ---------------------------------------------------------------------------------------------


def test_post_trade_share_is_exact():
    # USD 8M cash, USD 2M of holdings of which USD 1M is BNB; buying USD 2M of BNB.
    share = post_trade_share(
        facts(
            notional_usd=D("2000000.00"),
            cash_usd=D("8000000.00"),
            asset_value_usd=D("1000000.00"),
            holdings_value_usd=D("2000000.00"),
        )
    )

    assert share == D("0.3")
    assert isinstance(share, Decimal)


def test_post_trade_share_is_none_for_a_fund_worth_nothing():
    assert post_trade_share(facts(cash_usd=D("0"), holdings_value_usd=D("0"))) is None


@pytest.mark.parametrize(
    ("notional", "outcome", "share"),
    [
        ("3599999.99", PASS, "0.360000"),  # 0.359999999 rounds for display only
        ("3600000.00", WARN, "0.360000"),  # exactly 90% of the limit
        ("4000000.00", WARN, "0.400000"),  # exactly at the limit is allowed
        ("4000000.01", BLOCK, "0.400000"),
    ],
)
def test_concentration_boundaries(notional, outcome, share):
    check = check_concentration(facts(notional_usd=D(notional)))

    assert (check.rule, check.outcome) == ("concentration", outcome)
    assert check.values == {"post_trade_share": D(share), "limit": D("0.40")}


def test_concentration_counts_the_existing_holding_of_the_asset():
    # USD 9M of BNB already held, USD 25M cash: buying USD 4.7M makes BNB 40.29% of USD 34M.
    check = check_concentration(
        facts(
            notional_usd=D("4700000.00"),
            cash_usd=D("25000000.00"),
            asset_value_usd=D("9000000.00"),
            holdings_value_usd=D("9000000.00"),
        )
    )

    assert check.outcome == BLOCK
    assert check.values["post_trade_share"] == D("0.402941")
    assert check.message == (
        "After the trade BNB would be 40.29% of the fund, above the limit of 40.00%."
    )


def test_concentration_blocks_when_a_holding_has_no_price():
    check = check_concentration(facts(unpriced_symbols=("SOL", "KZTE")))

    assert check.outcome == BLOCK
    assert check.message == "Holdings cannot be valued: no stored price for SOL, KZTE."
    assert check.values == {"unpriced": "SOL, KZTE"}


def test_concentration_blocks_when_the_fund_is_worth_nothing():
    check = check_concentration(facts(cash_usd=D("0"), holdings_value_usd=D("0")))

    assert check.outcome == BLOCK
    assert check.message == "The fund has no value to measure a share against."


# ---------------------------------------------------------------------------------------------
# The market price behind the decision, and the limit price against it
# ---------------------------------------------------------------------------------------------


def test_a_fresh_consensus_price_passes():
    check = check_market_price(BASE)

    assert (check.rule, check.outcome) == ("market_price", PASS)
    assert check.values == {"price_usd": D("600.005")}


@pytest.mark.parametrize(
    ("flags", "price"),
    [(("stale",), "600.005"), (("divergent", "single_source"), "600.005"), ((), None)],
    ids=["stale", "two flags", "no price"],
)
def test_a_flagged_or_missing_price_warns_before_the_final_approval_and_blocks_it(flags, price):
    price = None if price is None else D(price)
    before = check_market_price(facts(price_flags=flags, market_price_usd=price))
    final = check_market_price(
        facts(price_flags=flags, market_price_usd=price, final_approval=True)
    )

    expected_flags = ", ".join(flags) or "missing"
    assert (before.outcome, final.outcome) == (WARN, BLOCK)
    assert final.values == {"flags": expected_flags}
    assert final.message == (
        f"The consensus price of BNB cannot back an approval ({expected_flags})."
    )


@pytest.mark.parametrize(
    ("limit", "outcome"),
    [("600.004", WARN), ("600.005", PASS), ("650.00", PASS)],
)
def test_a_limit_price_below_the_market_warns_that_the_order_may_not_fill(limit, outcome):
    check = check_limit_price(facts(limit_price_usd=D(limit)))

    assert (check.rule, check.outcome) == ("limit_price", outcome)
    assert check.values == {"limit_price_usd": D(limit), "market_price_usd": D("600.005")}


def test_without_a_market_price_the_limit_price_is_not_judged():
    check = check_limit_price(facts(market_price_usd=None))

    assert check.outcome == PASS


# ---------------------------------------------------------------------------------------------
# The overall outcome
# ---------------------------------------------------------------------------------------------


def test_all_checks_pass():
    report = evaluate(BASE)

    assert report.outcome == PASS
    assert [(c.rule, c.outcome) for c in report.checks] == [
        ("whitelist", PASS),
        ("single_proposal_limit", PASS),
        ("cash", PASS),
        ("concentration", PASS),
        ("market_price", PASS),
        ("limit_price", PASS),
    ]
    assert report.blocking == []


def test_one_warning_makes_the_outcome_warn():
    report = evaluate(facts(notional_usd=D("3600000.00")))

    assert report.outcome == WARN
    assert [c.outcome for c in report.checks] == [PASS, PASS, PASS, WARN, PASS, PASS]


def test_the_outcome_is_the_most_severe_check():
    # Off the whitelist (block) and near the concentration limit (warn).
    report = evaluate(facts(whitelisted=False, notional_usd=D("3600000.00")))

    assert report.outcome == BLOCK
    assert [c.outcome for c in report.checks] == [BLOCK, PASS, PASS, WARN, PASS, PASS]
    assert [c.rule for c in report.blocking] == ["whitelist"]


def test_every_blocking_check_is_listed():
    report = evaluate(
        facts(
            whitelisted=False,
            notional_usd=D("6000000.00"),
            cash_usd=D("5000000.00"),
            price_flags=("stale",),
            final_approval=True,
        )
    )

    assert [c.rule for c in report.blocking] == [
        "whitelist",
        "single_proposal_limit",
        "cash",
        "concentration",
        "market_price",
    ]


def test_the_report_as_json_keeps_exact_decimal_strings():
    report = evaluate(facts(notional_usd=D("4000000.01")))

    data = report.as_json()

    assert data["outcome"] == BLOCK
    cash = next(c for c in data["checks"] if c["rule"] == "cash")
    assert cash["values"] == {
        "cash_usd": "10000000.00",
        "reserved_usd": "0.00",
        "available_usd": "10000000.00",
        "notional_usd": "4000000.01",
    }
    concentration = data["checks"][3]
    assert concentration == {
        "rule": "concentration",
        "outcome": BLOCK,
        "message": "After the trade BNB would be 40.00% of the fund, above the limit of 40.00%.",
        "values": {"post_trade_share": "0.400000", "limit": "0.40"},
    }
