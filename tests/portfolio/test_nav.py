"""NAV history: ``GET /api/v1/funds/{id}/nav/``, ``manage.py take_nav_snapshots`` and the
``nav_snapshots_take`` task."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from governance import services
from portfolio.models import Fund, FxRate, NavSnapshot
from portfolio.services import nav_snapshot_take
from portfolio.tasks import nav_snapshots_take
from tests.commands import run_command
from tests.factories import FundBuilder, UserFactory

D = Decimal
OPENING = dt.date(2025, 12, 1)


def nav_url(fund) -> str:
    return f"/api/v1/funds/{fund.pk}/nav/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def day(n: int) -> dt.date:
    """The n-th day after the opening day."""
    return OPENING + dt.timedelta(days=n)


def snapshots(fund) -> list[tuple[dt.date, Decimal]]:
    return list(NavSnapshot.objects.filter(fund=fund).values_list("date", "nav_usd"))


@pytest.fixture
def opened(alem):
    """The Alem-like fund with USD 1M contributed the evening before the opening day (Almaty),
    USD 250,000.50 more on its third day, and the official rate of its first day. (The
    builder's USD 25M is booked today, after every day valued here.)"""
    for booked_at, amount in [
        (timezone.make_aware(dt.datetime(2025, 11, 30, 20)), D("1000000.00")),
        (timezone.make_aware(dt.datetime(2025, 12, 3, 9, 30)), D("250000.50")),
    ]:
        services.opening_balance_record(
            fund=alem.fund,
            funding_source=alem.funding_source,
            amount_usd=amount,
            booked_at=booked_at,
        )
    FxRate.objects.create(rate=D("470.5"), date=OPENING)
    return alem


def take(fund, days: int) -> None:
    for n in range(days):
        nav_snapshot_take(fund=fund, day=day(n))


# ---------------------------------------------------------------------------------------------
# GET /api/v1/funds/{id}/nav/
# ---------------------------------------------------------------------------------------------


def test_nav_history_lists_the_snapshots_oldest_first_with_exact_amounts(opened):
    take(opened.fund, 3)

    response = client_for(opened.users["auditor"]).get(nav_url(opened.fund))

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (3, None, None)
    first, second, third = body["results"]
    assert first == {
        "date": "2025-12-01",
        "valued_at": "2025-12-01T23:59:59.999999+05:00",
        "cash_usd": "1000000",
        "holdings_value_usd": "0",
        "nav_usd": "1000000",
        "usd_kzt_rate": "470.5",
        "usd_kzt_rate_date": "2025-12-01",
        "nav_kzt": "470500000",
        "positions": [],
        "taken_at": first["taken_at"],
    }
    assert (second["date"], second["nav_usd"], second["usd_kzt_rate_date"]) == (
        "2025-12-02",
        "1000000",
        "2025-12-01",  # the rate of the first day stays in force
    )
    assert (third["date"], third["cash_usd"], third["nav_usd"], third["nav_kzt"]) == (
        "2025-12-03",
        "1250000.5",
        "1250000.5",
        "588125235.25",  # 1,250,000.50 x 470.5
    )


def test_nav_history_shows_the_stored_positions_without_storage_zeros(opened):
    services.opening_balance_record(
        fund=opened.fund,
        funding_source=opened.funding_source,
        asset=opened.asset,
        quantity=D("2.5"),
        amount_usd=D("1500.00"),
    )
    nav_snapshot_take(fund=opened.fund, day=timezone.localdate())

    body = client_for(opened.users["auditor"]).get(nav_url(opened.fund)).json()

    (today,) = body["results"]
    # Today so far: everything booked until now, BNB at the consensus 600.005
    assert today["nav_usd"] == "26251500.5125"  # 26,250,000.50 + 2.5 x 600.005
    assert today["positions"] == [
        {
            "asset": "BNB",
            "quantity": "2.5",
            "cost_basis_usd": "1500",
            "price_usd": "600.005",
            "market_value_usd": "1500.0125",
            "price_flags": [],
        }
    ]


@pytest.mark.parametrize(
    ("query", "dates"),
    [
        ({}, ["2025-12-01", "2025-12-02", "2025-12-03", "2025-12-04"]),
        ({"from": "2025-12-02"}, ["2025-12-02", "2025-12-03", "2025-12-04"]),
        ({"to": "2025-12-02"}, ["2025-12-01", "2025-12-02"]),
        ({"from": "2025-12-02", "to": "2025-12-03"}, ["2025-12-02", "2025-12-03"]),
        ({"from": "2025-12-03", "to": "2025-12-03"}, ["2025-12-03"]),
        ({"from": "2026-01-01", "to": "2026-01-31"}, []),
    ],
)
def test_nav_history_filters_by_an_inclusive_range_of_days(opened, query, dates):
    take(opened.fund, 4)

    response = client_for(opened.users["risk"]).get(nav_url(opened.fund), query)

    assert response.status_code == 200
    assert [row["date"] for row in response.json()["results"]] == dates


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2025-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2025-12-01T00:00:00"}, "from"),
        ({"from": "2025-12-03", "to": "2025-12-02"}, "from"),
    ],
)
def test_bad_dates_or_from_after_to_are_a_400_naming_the_parameter(opened, query, field):
    take(opened.fund, 2)

    response = client_for(opened.users["risk"]).get(nav_url(opened.fund), query)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert NavSnapshot.objects.count() == 2


def test_nav_history_is_paginated_by_fifty(opened):
    take(opened.fund, 55)

    client = client_for(opened.users["auditor"])
    first = client.get(nav_url(opened.fund)).json()
    second = client.get(first["next"]).json()

    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["results"][-1]["date"] == day(49).isoformat()
    assert [row["date"] for row in second["results"]] == [day(n).isoformat() for n in range(50, 55)]
    assert second["next"] is None


def test_nav_history_lists_only_the_funds_own_snapshots(opened):
    other = FundBuilder.alem_like(prefix="other_")
    take(opened.fund, 2)
    take(other.fund, 3)

    body = client_for(opened.users["auditor"]).get(nav_url(opened.fund)).json()

    assert body["count"] == 2
    assert {row["nav_usd"] for row in body["results"]} == {"1000000"}


def test_another_funds_nav_history_is_a_404(opened):
    other = FundBuilder.alem_like(prefix="other_")
    take(opened.fund, 2)

    response = client_for(other.users["auditor"]).get(nav_url(opened.fund))

    assert response.status_code == 404
    assert "results" not in response.json()


def test_a_superuser_without_a_fund_role_gets_a_404_for_the_nav(opened):
    take(opened.fund, 1)
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)

    assert client_for(admin).get(nav_url(opened.fund)).status_code == 404


def test_the_nav_history_needs_authentication(opened):
    take(opened.fund, 1)

    response = APIClient().get(nav_url(opened.fund))

    assert response.status_code == 401


def test_the_nav_history_is_read_only(opened):
    take(opened.fund, 1)

    response = client_for(opened.users["fundadmin"]).post(nav_url(opened.fund), {})

    assert response.status_code == 405
    assert snapshots(opened.fund) == [(day(0), D("1000000"))]


def nav_queries(fund, user) -> int:
    client = client_for(user)
    # Warm up first: guardian caches content types per process on its first lookup.
    client.get(nav_url(fund))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(nav_url(fund))
    assert response.status_code == 200
    return len(queries)


def test_nav_queries_do_not_grow_with_the_number_of_days(opened):
    take(opened.fund, 5)
    with_5 = nav_queries(opened.fund, opened.users["auditor"])

    take(opened.fund, 50)
    with_50 = nav_queries(opened.fund, opened.users["auditor"])

    assert NavSnapshot.objects.filter(fund=opened.fund).count() == 50
    assert with_50 == with_5


# ---------------------------------------------------------------------------------------------
# manage.py take_nav_snapshots
# ---------------------------------------------------------------------------------------------


def run(*args) -> str:
    return run_command("take_nav_snapshots", *args)


def test_the_command_takes_one_snapshot_per_day_of_the_range_for_one_fund(opened):
    other = FundBuilder.alem_like(prefix="other_")

    output = run("--from", "2025-12-02", "--to", "2025-12-04", "--fund", "alem")

    assert output.strip() == "3 NAV snapshot(s) taken."
    assert snapshots(opened.fund) == [
        (day(1), D("1000000")),
        (day(2), D("1250000.5")),
        (day(3), D("1250000.5")),
    ]
    assert snapshots(other.fund) == []


def test_the_command_values_every_fund_by_default(opened):
    other = FundBuilder.alem_like(prefix="other_")

    output = run("--from", "2025-12-01", "--to", "2025-12-02")

    assert output.strip() == "4 NAV snapshot(s) taken."
    assert [d for d, _ in snapshots(opened.fund)] == [day(0), day(1)]
    # The other fund's cash was booked today: nothing was held on those days
    assert snapshots(other.fund) == [(day(0), D("0")), (day(1), D("0"))]


def test_the_command_defaults_to_today(opened):
    output = run("--fund", "alem")

    assert output.strip() == "1 NAV snapshot(s) taken."
    ((date, nav),) = snapshots(opened.fund)
    assert date == timezone.localdate()
    assert nav == D("26250000.5")  # the builder's USD 25M is booked by now


def test_retaking_a_day_replaces_its_snapshot(opened):
    run("--from", "2025-12-02", "--to", "2025-12-02")
    first = NavSnapshot.objects.get(fund=opened.fund)
    # A contribution booked late, for the morning of that day
    services.opening_balance_record(
        fund=opened.fund,
        funding_source=opened.funding_source,
        amount_usd=D("0.25"),
        booked_at=timezone.make_aware(dt.datetime(2025, 12, 2, 8)),
    )

    run("--from", "2025-12-02", "--to", "2025-12-02", "--fund", "alem")

    again = NavSnapshot.objects.get(fund=opened.fund)
    assert again.pk == first.pk
    assert (first.nav_usd, again.nav_usd) == (D("1000000"), D("1000000.25"))
    assert again.nav_kzt == D("470500117.625")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2025-02-30"), "'2025-02-30' is not a date (YYYY-MM-DD)."),
        (("--to", "tomorrow"), "'tomorrow' is not a date (YYYY-MM-DD)."),
        (("--from", "2025-12-03", "--to", "2025-12-02"), "--from must not be after --to."),
        (("--fund", "nope"), "No fund with slug 'nope'."),
    ],
)
def test_the_command_refuses_bad_input_and_takes_nothing(opened, args, message):
    with pytest.raises(CommandError) as error:
        run(*args)

    assert str(error.value) == message
    assert NavSnapshot.objects.count() == 0


def test_the_command_refuses_a_day_that_has_not_begun(opened):
    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).isoformat()

    with pytest.raises(CommandError) as error:
        run("--to", tomorrow)

    assert str(error.value) == "Cannot value a day that has not begun."
    assert NavSnapshot.objects.count() == 0


# ---------------------------------------------------------------------------------------------
# The scheduled task
# ---------------------------------------------------------------------------------------------


def test_the_task_snapshots_every_fund_for_yesterday_and_today_so_far(opened):
    other = FundBuilder.alem_like(prefix="other_")
    today = timezone.localdate()

    taken = nav_snapshots_take.apply().get()

    assert taken == 4
    assert Fund.objects.count() == 2
    yesterday = today - dt.timedelta(days=1)
    assert snapshots(opened.fund) == [(yesterday, D("1250000.5")), (today, D("26250000.5"))]
    assert snapshots(other.fund) == [(yesterday, D("0")), (today, D("25000000"))]


def test_running_the_task_again_replaces_todays_snapshots(opened):
    nav_snapshots_take.apply().get()
    ids = set(NavSnapshot.objects.values_list("pk", flat=True))
    services.opening_balance_record(
        fund=opened.fund,
        funding_source=opened.funding_source,
        amount_usd=D("10.00"),
    )

    assert nav_snapshots_take.apply().get() == 2

    assert set(NavSnapshot.objects.values_list("pk", flat=True)) == ids
    assert snapshots(opened.fund)[-1] == (timezone.localdate(), D("26250010.5"))
