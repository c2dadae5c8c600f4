"""The portfolio page: ``GET /funds/<id>/`` shows one fund's positions, NAV, history, funding
sources and mandate, every amount exact, to holders of a role on that fund only."""

import datetime as dt
import json
import re
from decimal import Decimal
from itertools import pairwise

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance import services
from portfolio import selectors
from portfolio.models import Asset, CustodyAccount, FundingSource, FxRate, NavSnapshot, Price
from portfolio.prices.selectors import consensus_for, consensus_for_assets
from tests.factories import (
    AssetFactory,
    CustodyAccountFactory,
    FundBuilder,
    FundingSourceFactory,
    PriceFactory,
    UserFactory,
    otp_code,
)
from tests.web import signed_in

D = Decimal


def page_url(fund, **query) -> str:
    url = reverse("portfolio", args=[fund.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def get_page(client, user, fund, **query):
    signed_in(client, user)
    return client.get(page_url(fund, **query))


def chart_data(response, element_id: str) -> dict:
    """The JSON of the page's ``json_script`` block ``element_id``."""
    html = response.content.decode()
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, f"no data block {element_id}"
    return json.loads(match.group(1))


def text_of(response) -> str:
    """The page's HTML with tags dropped and white space collapsed, for phrase checks."""
    html = response.content.decode()
    html = re.sub(r"<script\b.*?</script>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def fill(alem, proposal, *, ref: str, quantity: str, price: str, fee: str):
    return services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users["treasury"],
        quantity=D(quantity),
        price_usd=D(price),
        fee_usd=D(fee),
        venue="binance",
        external_ref=ref,
        executed_at=timezone.now(),
        otp_token=otp_code(alem.users["treasury"]),
    )


def contribute_in_kind(alem, asset, *, quantity: str, amount_usd: str, source=None):
    return services.opening_balance_record(
        fund=alem.fund,
        funding_source=source or alem.funding_source,
        amount_usd=D(amount_usd),
        asset=asset,
        quantity=D(quantity),
    )


def priced_asset(
    symbol: str, price: str, *, sources=(Price.Source.BINANCE, Price.Source.COINGECKO)
):
    asset = AssetFactory(symbol=symbol)
    for source in sources:
        PriceFactory(asset=asset, source=source, price=D(price))
    return asset


def snapshot(fund, day: dt.date, nav_usd: str | None, *, rate: str = "470.5"):
    """A NAV snapshot of ``day`` stored directly: cash only, at ``rate`` tenge per dollar."""
    nav = None if nav_usd is None else D(nav_usd)
    return NavSnapshot.objects.create(
        fund=fund,
        date=day,
        valued_at=timezone.now(),
        cash_usd=nav or D("0"),
        holdings_value_usd=D("0"),
        nav_usd=nav,
        usd_kzt_rate=D(rate),
        usd_kzt_rate_date=day,
        nav_kzt=None if nav is None else nav * D(rate),
    )


def days_back(n: int) -> dt.date:
    return timezone.localdate() - dt.timedelta(days=n)


@pytest.fixture
def traded(alem):
    """USD 25M cash, one fill of 400 BNB at 600.00 with a 12.50 fee, BNB's consensus at 600.005
    and an official rate of 470.5 tenge per dollar published yesterday."""
    proposal = alem.approve_fully(alem.proposal(submit=True))
    fill(alem, proposal, ref="ord-1", quantity="400", price="600.00", fee="12.50")
    FxRate.objects.create(rate=D("470.5"), date=days_back(1))
    return alem


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_sign_in(client, alem):
    response = client.get(page_url(alem.fund))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={page_url(alem.fund)}"


def test_a_fund_the_user_holds_no_role_on_is_not_found(client, alem):
    other = FundBuilder.alem_like(prefix="reserve_", asset_symbol="BTC")

    response = get_page(client, other.users["auditor"], alem.fund)

    assert response.status_code == 404


def test_a_user_without_any_role_gets_404_not_403(client, alem):
    response = get_page(client, UserFactory(username="outsider"), alem.fund)

    assert response.status_code == 404


def test_an_unknown_fund_is_not_found(client, alem):
    signed_in(client, alem.users["auditor"])

    response = client.get(reverse("portfolio", args=[alem.fund.pk + 1000]))

    assert response.status_code == 404


def test_every_role_on_the_fund_may_see_it(client, alem):
    response = get_page(client, alem.users["manager"], alem.fund)

    assert response.status_code == 200
    assert response.context["nav_section"] == "portfolio"
    assert response.context["nav_fund_id"] == alem.fund.pk


# ---------------------------------------------------------------------------------------------
# Positions, cash and NAV now
# ---------------------------------------------------------------------------------------------


def test_positions_after_a_fill_show_quantity_price_value_cost_share_and_pnl(client, traded):
    response = get_page(client, traded.users["auditor"], traded.fund)

    assert response.status_code == 200
    (row,) = response.context["positions"]
    assert row.position.quantity == D("400")
    assert row.position.price_usd == D("600.005")
    assert row.flags == []
    html = response.content.decode()
    positions = html[html.index('id="positions-heading"') :]
    cells = re.search(r'<th scope="row">BNB</th>(.*?)</tr>', positions, re.S).group(1)
    values = [" ".join(c.split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
    assert values[0] == "400"
    assert values[1] == "600.005"
    assert "Usable consensus price" in values[2]
    assert values[3:] == ["240,002.00", "240,000.00", "0.96%", "2.00"]


def test_header_shows_cash_nav_in_dollars_and_in_tenge_at_the_official_rate(client, traded):
    response = get_page(client, traded.users["auditor"], traded.fund)

    text = text_of(response)
    # Cash: 25,000,000 - 240,000 - 12.50; NAV adds 400 BNB at 600.005.
    assert "Cash (USD) 24,759,987.50" in text
    assert "NAV (USD) 24,999,989.50" in text
    assert "Holdings (USD) 240,002.00" in text
    # 24,999,989.50 x 470.5, exact.
    assert "NAV (KZT) 11,762,495,059.75" in text
    assert "Official rate 470.5 tenge per US dollar" in text
    yesterday = days_back(1)
    assert f'<time datetime="{yesterday:%Y-%m-%d}">' in response.content.decode()


def test_nav_in_tenge_is_explained_when_no_official_rate_exists(client, alem):
    response = get_page(client, alem.users["auditor"], alem.fund)

    text = text_of(response)
    assert "NAV (USD) 25,000,000.00" in text
    assert "NAV (KZT) Not known: no official USD/KZT rate has been published yet." in text


def test_flagged_prices_are_explained_in_plain_words(client, alem):
    sol = priced_asset("SOL", "150.25", sources=(Price.Source.BINANCE,))
    contribute_in_kind(alem, sol, quantity="10", amount_usd="1500.00")

    response = get_page(client, alem.users["auditor"], alem.fund)

    html = response.content.decode()
    assert (
        '<span class="badge badge--single_source">'
        "Only one source is fresh, so nothing corroborates it.</span>" in html
    )
    # A single-source price still values the holding; the flag travels with it.
    assert "NAV (USD) 25,001,502.50" in text_of(response)


def test_a_holding_without_any_price_leaves_the_nav_unknown_and_says_why(client, alem):
    kzte = AssetFactory(symbol="KZTE")
    contribute_in_kind(alem, kzte, quantity="1000", amount_usd="2.00")

    response = get_page(client, alem.users["auditor"], alem.fund)

    assert response.status_code == 200
    text = text_of(response)
    assert "NAV (USD) Not known: KZTE has no price." in text
    assert "No source has ever priced this asset." in text
    assert chart_data(response, "allocation-data")["series"][0]["points"] == [
        ["US dollar cash", "25000000", ""]
    ]


# ---------------------------------------------------------------------------------------------
# Charts: exact decimal strings in json_script blocks, the same values in tables
# ---------------------------------------------------------------------------------------------


def test_allocation_chart_data_are_exact_market_values_and_cash(client, traded):
    response = get_page(client, traded.users["auditor"], traded.fund)

    assert chart_data(response, "allocation-data") == {
        "unit": "USD",
        "series": [
            {
                "name": "Allocation",
                "points": [
                    ["BNB", "240002", "0.96%"],
                    # 24,759,987.5 / 24,999,989.5 = 0.990399…, shown to six decimals of one.
                    ["US dollar cash", "24759987.5", "99.04%"],
                ],
            }
        ],
    }
    html = response.content.decode()
    assert re.search(
        r'<div class="chart" data-chart="donut" data-source="allocation-data" '
        r'data-empty="No data yet" role="img" aria-label="[^"]+"></div>',
        html,
    )


def test_nav_history_charts_carry_dollars_and_tenge_of_each_day(client, alem):
    snapshot(alem.fund, days_back(2), "1000000.25")
    snapshot(alem.fund, days_back(1), None)  # a day with an unpriced holding: no point
    snapshot(alem.fund, days_back(0), "1250000.5", rate="471.25")

    response = get_page(client, alem.users["auditor"], alem.fund)

    two, zero = days_back(2).isoformat(), days_back(0).isoformat()
    assert chart_data(response, "nav-usd-data") == {
        "unit": "USD",
        "series": [
            {
                "name": "NAV (USD)",
                "points": [
                    [two, "1000000.25", "1,000,000.25"],
                    [zero, "1250000.5", "1,250,000.50"],
                ],
            }
        ],
    }
    assert chart_data(response, "nav-kzt-data") == {
        "unit": "KZT",
        "series": [
            {
                "name": "NAV (KZT)",
                # 1,000,000.25 x 470.5 and 1,250,000.5 x 471.25
                "points": [
                    [two, "470500117.625", "470,500,117.625"],
                    [zero, "589062735.625", "589,062,735.625"],
                ],
            }
        ],
    }
    # The fallback tables hold the same values.
    tables = response.context["nav_charts"]
    assert [row[1] for row in tables[0].rows] == ["1,000,000.25", "1,250,000.50"]
    assert [row[1] for row in tables[1].rows] == ["470,500,117.625", "589,062,735.625"]
    assert '<td class="num">589,062,735.625</td>' in response.content.decode()


def test_nav_history_period_limits_the_days_shown(client, alem):
    for n in (0, 29, 30, 89, 90, 364, 365, 366):
        snapshot(alem.fund, days_back(n), f"{1000 + n}")

    def days_shown(**query):
        response = get_page(client, alem.users["auditor"], alem.fund, **query)
        assert response.status_code == 200
        points = chart_data(response, "nav-usd-data")["series"][0]["points"]
        return [int(D(value)) - 1000 for _day, value, _shown in points]

    assert days_shown(days="30") == [29, 0]
    assert days_shown(days="90") == [89, 30, 29, 0]
    assert days_shown(days="365") == [364, 90, 89, 30, 29, 0]
    assert days_shown(days="all") == [366, 365, 364, 90, 89, 30, 29, 0]
    assert days_shown() == [89, 30, 29, 0]


def test_a_history_longer_than_a_year_is_shown_by_the_end_of_each_month(client, alem):
    today = timezone.localdate()
    days = [today - dt.timedelta(days=n) for n in range(800, -1, -1)]
    for day in days:
        snapshot(alem.fund, day, str(day.toordinal()))
    month_ends = [day for day, after in pairwise(days) if day.month != after.month]

    response = get_page(client, alem.users["auditor"], alem.fund, days="all")
    points = chart_data(response, "nav-usd-data")["series"][0]["points"]
    year = get_page(client, alem.users["auditor"], alem.fund, days="365")

    assert [day for day, _value, _shown in points] == [
        day.isoformat() for day in [*month_ends, today]
    ]
    assert [D(value) for _day, value, _shown in points] == [
        D(day.toordinal()) for day in [*month_ends, today]
    ]
    assert len(response.context["nav_charts"][0].rows) == len(month_ends) + 1
    assert "at the end of each month of the period" in response.content.decode()
    assert len(chart_data(year, "nav-usd-data")["series"][0]["points"]) == 365


@pytest.mark.parametrize("days", ["7", "abc", "-1", "0", "99999999999999999999", "all%00"])
def test_an_unknown_period_falls_back_to_ninety_days(client, alem, days):
    snapshot(alem.fund, days_back(100), "1")
    snapshot(alem.fund, days_back(1), "2")

    response = get_page(client, alem.users["auditor"], alem.fund, days=days)

    assert response.status_code == 200
    assert response.context["period"] == "90"
    assert chart_data(response, "nav-usd-data")["series"][0]["points"] == [
        [days_back(1).isoformat(), "2", "2.00"]
    ]
    assert '<a href="?days=90#nav-history-heading" aria-current="page">' in (
        response.content.decode()
    )


def test_without_history_the_charts_are_empty_and_say_so(client, alem):
    response = get_page(client, alem.users["auditor"], alem.fund)

    assert chart_data(response, "nav-usd-data")["series"][0]["points"] == []
    assert chart_data(response, "nav-kzt-data")["series"][0]["points"] == []
    assert text_of(response).count("No data yet") == 2


def test_in_russian_displays_follow_the_language_and_chart_values_stay_plain(client, traded):
    snapshot(traded.fund, days_back(0), "1250000.5")
    signed_in(client, traded.users["auditor"])

    response = client.get(page_url(traded.fund), HTTP_ACCEPT_LANGUAGE="ru")

    assert response.status_code == 200
    # Russian groups with a no-break space and marks decimals with a comma.
    assert "24\xa0759\xa0987,50" in response.content.decode()
    assert chart_data(response, "nav-usd-data")["series"][0]["points"] == [
        [days_back(0).isoformat(), "1250000.5", "1\xa0250\xa0000,50"]
    ]


# ---------------------------------------------------------------------------------------------
# Funding sources and mandate
# ---------------------------------------------------------------------------------------------


def test_funding_sources_show_what_each_contributed(client, alem):
    seized = FundingSourceFactory(
        fund=alem.fund, name="Seized assets 2025", kind=FundingSource.Kind.SEIZED_ASSETS
    )
    FundingSourceFactory(fund=alem.fund, name="Mining revenue", kind="mining_revenue")
    btc = priced_asset("BTC", "90000.00")
    contribute_in_kind(alem, btc, quantity="1.5", amount_usd="135000.10", source=seized)
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=seized,
        amount_usd=D("0.15"),
    )

    response = get_page(client, alem.users["auditor"], alem.fund)

    rows = [(s.name, s.contributed_usd) for s in response.context["funding_sources"]]
    assert rows == [
        ("Mining revenue", D("0")),
        ("Republican budget allocation", D("25000000.00")),
        ("Seized assets 2025", D("135000.25")),
    ]
    text = text_of(response)
    assert "Mining revenue State mining revenue 0.00" in text
    assert "Republican budget allocation Budget allocation 25,000,000.00" in text
    assert "Seized assets 2025 Seized assets 135,000.25" in text


def test_funding_sources_count_contributions_only_not_purchases_nor_other_funds(traded):
    other = FundBuilder.alem_like(prefix="reserve_", cash_usd=D("7.00"))

    def totals(fund):
        return {
            s.name: s.contributed_usd for s in selectors.funding_sources_with_contributions(fund)
        }

    # The fill's ledger entries (asset in, cash and fee out) name no source and count nowhere.
    assert totals(traded.fund) == {"Republican budget allocation": D("25000000.00")}
    assert totals(other.fund) == {"Republican budget allocation": D("7.00")}


def test_mandate_limits_are_shown_without_rounding(client, alem):
    alem.fund.price_tolerance = D("0.012345")
    alem.fund.execution_window_days = 1
    alem.fund.max_fee_share = D("0.0025")
    alem.fund.save()

    response = get_page(client, alem.users["auditor"], alem.fund)

    text = text_of(response)
    assert "Largest share of one asset after a trade 40.00%" in text
    assert "Largest notional of one proposal (USD) 5,000,000.00" in text
    assert "Execution window 1 day after approval" in text
    assert "Price tolerance against the consensus price 1.2345%" in text
    assert "Largest fee of an execution, as a share of quantity × price 0.25%" in text


# ---------------------------------------------------------------------------------------------
# Queries and the Content-Security-Policy
# ---------------------------------------------------------------------------------------------


def count_queries(client, user, fund) -> int:
    signed_in(client, user)
    url = page_url(fund, days="all")
    client.get(url)  # warm the session and caches
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_query_count_does_not_grow_with_days_of_history(client, alem):
    for n in range(3):
        snapshot(alem.fund, days_back(n), "100")
    few = count_queries(client, alem.users["auditor"], alem.fund)

    for n in range(3, 60):
        snapshot(alem.fund, days_back(n), "100")
    many = count_queries(client, alem.users["auditor"], alem.fund)

    assert NavSnapshot.objects.filter(fund=alem.fund).count() == 60
    assert many == few


def test_query_count_does_not_grow_with_positions(client, alem):
    contribute_in_kind(alem, alem.asset, quantity="1", amount_usd="600.00")
    one = count_queries(client, alem.users["auditor"], alem.fund)

    for n, symbol in enumerate(["BTC", "ETH", "SOL", "TON"], start=1):
        contribute_in_kind(alem, priced_asset(symbol, f"{n}00.5"), quantity="2", amount_usd="1.00")
    five = count_queries(client, alem.users["auditor"], alem.fund)

    assert len(selectors.fund_holdings(alem.fund)) == 5
    assert five == one


def test_consensus_of_many_assets_in_one_query_equals_each_assets_own(alem):
    contribute_in_kind(alem, alem.asset, quantity="1.5", amount_usd="900.00")
    single = priced_asset("SOL", "150.25", sources=(Price.Source.BINANCE,))
    contribute_in_kind(alem, single, quantity="10", amount_usd="1500.00")
    split = priced_asset("ETH", "3000")
    PriceFactory(asset=split, source=Price.Source.MANUAL, price=D("3500"))
    contribute_in_kind(alem, split, quantity="0.25", amount_usd="700.00")
    stale = AssetFactory(symbol="TON")
    PriceFactory(asset=stale, price=D("5.5"), observed_at=timezone.now() - dt.timedelta(days=2))
    contribute_in_kind(alem, stale, quantity="100", amount_usd="550.00")
    contribute_in_kind(alem, AssetFactory(symbol="KZTE"), quantity="7", amount_usd="0.01")
    at = timezone.now()

    assets = list(Asset.objects.all())

    together = consensus_for_assets(assets, at=at)

    assert together == {asset.pk: consensus_for(asset, at=at) for asset in assets}
    assert {c.asset: c.flags for c in together.values()} == {
        "BNB": (),
        "SOL": ("single_source",),
        "ETH": ("divergent",),
        "TON": ("stale",),
        "KZTE": ("missing",),
    }


def test_page_sends_the_csp_header_and_has_no_inline_script_style_or_handler(client, traded):
    snapshot(traded.fund, days_back(1), "100")

    response = get_page(client, traded.users["auditor"], traded.fund)

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = response.content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert ' src="' in tag or 'type="application/json"' in tag, tag
    assert re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', html)[-1].endswith("alem/charts.js")
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


# ---------------------------------------------------------------------------------------------
# Custody accounts
# ---------------------------------------------------------------------------------------------


def accounts_section(response) -> str:
    html = response.content.decode()
    return html.split('id="accounts-heading"')[1].split("</section>")[0]


def test_custody_accounts_show_kind_chain_address_cooling_off_and_what_each_holds(client, alem):
    cold = CustodyAccountFactory(
        fund=alem.fund, name="Cold multisig", address="0x" + "ab12" * 10, chain="BNB Smart Chain"
    )
    custodian = CustodyAccountFactory(
        fund=alem.fund,
        name="Custodian",
        kind=CustodyAccount.Kind.QUALIFIED_CUSTODIAN,
        address="",
        account_reference="ACC-42",
        usable_from=timezone.now() + dt.timedelta(hours=5),
    )
    CustodyAccountFactory(fund=alem.fund, name="Retired", active=False, removed_at=timezone.now())
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=alem.asset,
        account=cold,
        quantity=D("100"),
        amount_usd=D("50000"),
    )
    contribute_in_kind(alem, alem.asset, quantity="2.5", amount_usd="1500.00")

    response = get_page(client, alem.users["auditor"], alem.fund)

    section = accounts_section(response)
    text = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    assert "Cold multisig Kind Cold multisig wallet Chain BNB Smart Chain" in text
    # The address shortened, whole in its title and for screen readers.
    address = cold.address
    assert f'<span aria-hidden="true" title="{address}">0xab12…12ab12</span>' in section
    assert f'<span class="visually-hidden">{address}</span>' in section
    assert re.search(
        r"BNB\s*</th>\s*<td class=\"num\">100</td>\s*<td class=\"num\">50,000.00</td>", section
    )
    assert "Custodian Cooling off" in text
    assert "Account reference ACC-42" in text
    assert f'datetime="{timezone.localtime(custodian.usable_from).isoformat()}"' in section
    assert "Holds nothing." in text
    assert "Retired" not in text
    # The 2.5 BNB contributed without an account.
    outside = section.split('id="outside-accounts-heading"')[1]
    assert "Not in a custody account" in outside
    assert re.search(
        r"BNB\s*</th>\s*<td class=\"num\">2.5</td>\s*<td class=\"num\">1,500.00</td>", outside
    )


def test_a_fund_whose_holdings_are_all_in_accounts_shows_nothing_outside_them(client, alem):
    cold = CustodyAccountFactory(fund=alem.fund, name="Cold multisig")
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=alem.asset,
        account=cold,
        quantity=D("1"),
        amount_usd=D("600"),
    )

    response = get_page(client, alem.users["auditor"], alem.fund)

    assert 'id="outside-accounts-heading"' not in accounts_section(response)


def test_query_count_does_not_grow_with_custody_accounts_and_their_positions(client, alem):
    first = CustodyAccountFactory(fund=alem.fund)
    contribute_in_account(alem, alem.asset, first, quantity="1")
    one = count_queries(client, alem.users["auditor"], alem.fund)

    for symbol in ("BTC", "ETH", "SOL"):
        asset = priced_asset(symbol, "10.5")
        for _ in range(2):
            contribute_in_account(alem, asset, CustodyAccountFactory(fund=alem.fund), quantity="2")
    many = count_queries(client, alem.users["auditor"], alem.fund)

    assert CustodyAccount.objects.filter(fund=alem.fund).count() == 7
    assert many == one


def contribute_in_account(alem, asset, account, *, quantity: str):
    return services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=asset,
        account=account,
        quantity=D(quantity),
        amount_usd=D("1.00"),
    )
