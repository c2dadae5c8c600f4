"""The public pages: only funds that disclose, nothing newer than their delay, settings changed
only by two people, served from a stored document without cookies."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance import services
from governance.exceptions import FourEyesRequired
from governance.models import AuditEvent, Execution
from portfolio.disclosure import Disclosure, disclosure_build, disclosures_refresh, explorer_url
from portfolio.models import Fund, PublicDisclosure
from tests.factories import otp_device
from tests.web import signed_in

D = Decimal
TX = "0x" + "ab" * 32


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def publish_disclosure(alem, disclosure: Disclosure):
    """Draft a policy version carrying ``disclosure`` and publish it by a second administrator,
    the only path that changes what a fund discloses."""
    in_force = alem.fund.policies.filter(published_at__isnull=False).order_by("-version").first()
    stages = [
        services.policies.policies.StageSpec(
            order=s.order,
            name=s.name,
            permission=s.permission,
            quorum=s.quorum,
            applies_from_usd=s.applies_from_usd,
        )
        for s in in_force.stages.order_by("order")
    ]
    policy = services.policy_draft(
        actor=alem.users["fundadmin"], fund=alem.fund, stages=stages, disclosure=disclosure
    )
    services.policy_publish(actor=alem.users["fundadmin2"], policy_id=policy.pk)
    alem.fund.refresh_from_db()
    return policy


def fill(alem, proposal, executed_at, *, quantity="10", ref="order", tx_hash=TX) -> Execution:
    """A fill as the execution service books it, written directly to set its time."""
    price = D("600")
    return Execution.objects.create(
        proposal=proposal,
        quantity=D(quantity),
        price_usd=price,
        fee_usd=D("0"),
        cost_usd=D(quantity) * price,
        venue="Binance",
        external_ref=ref,
        executed_at=executed_at,
        recorded_by=alem.users["treasury"],
        confirmed_by_device=otp_device(alem.users["treasury"]).persistent_id,
        tx_hash=tx_hash,
    )


def urls(slug: str) -> list[str]:
    return [
        reverse("public-fund", args=[slug]),
        reverse("public-fund-json", args=[slug]),
        reverse("public-fund-purchases-csv", args=[slug]),
        reverse("public-fund-feed", args=[slug]),
    ]


def shown_purchase_refs(client, slug: str) -> dict[str, set]:
    """Which purchases (by quantity) each public answer shows."""
    page = client.get(reverse("public-fund", args=[slug])).content.decode()
    data = client.get(reverse("public-fund-json", args=[slug])).json()
    rows = list(csv.DictReader(io.StringIO(client.get(urls(slug)[2]).content.decode())))
    feed = client.get(urls(slug)[3]).content.decode()
    return {
        "json": {p["quantity"] for p in data["purchases"]},
        "csv": {row["quantity"] for row in rows},
        "page": {q for q in ("11", "12") if f">{q}<" in page},
        "feed": {q for q in ("11", "12") if f"Bought {q} BNB" in feed},
    }


# ---------------------------------------------------------------------------------------------
# The delay: nothing newer than it is ever public
# ---------------------------------------------------------------------------------------------


def test_a_purchase_one_second_inside_the_delay_is_hidden_and_one_past_it_shows(client, alem):
    publish_disclosure(alem, Disclosure(True, 30, False))
    now = timezone.now()
    proposal = alem.approve_fully(alem.proposal(submit=True))
    delay = dt.timedelta(days=30)
    fill(alem, proposal, now - delay - dt.timedelta(seconds=1), quantity="11", ref="past")
    fill(alem, proposal, now - delay + dt.timedelta(seconds=1), quantity="12", ref="inside")

    disclosure_build(alem.fund, now=now)

    shown = shown_purchase_refs(client, alem.fund.slug)
    assert shown == {"json": {"11"}, "csv": {"11"}, "page": {"11"}, "feed": {"11"}}


def test_a_purchase_exactly_at_the_cutoff_shows(alem):
    publish_disclosure(alem, Disclosure(True, 30, False))
    now = timezone.now()
    proposal = alem.approve_fully(alem.proposal(submit=True))
    fill(alem, proposal, now - dt.timedelta(days=30))

    document = disclosure_build(alem.fund, now=now).document

    assert [p["quantity"] for p in document["purchases"]] == ["10"]
    assert document["cutoff"] == (now - dt.timedelta(days=30)).isoformat()


def test_holdings_nav_and_statistics_stop_at_the_cutoff(alem):
    from portfolio.services import nav_snapshot_take

    publish_disclosure(alem, Disclosure(True, 2, False))
    today = timezone.localdate()
    for days_ago in (5, 3, 1, 0):
        nav_snapshot_take(fund=alem.fund, day=today - dt.timedelta(days=days_ago))
    alem.approve_fully(alem.proposal(submit=True))  # decided now: inside the delay

    document = disclosure_build(alem.fund).document

    assert [row[0] for row in document["nav_history"]] == [
        (today - dt.timedelta(days=5)).isoformat(),
        (today - dt.timedelta(days=3)).isoformat(),
    ]
    assert document["statistics"]["submitted"] == 0
    assert document["statistics"]["approved"] == 0


def test_explorer_links_follow_the_assets_chain():
    assert explorer_url("BNB Smart Chain", TX) == f"https://bscscan.com/tx/{TX}"
    assert explorer_url("Bitcoin", "ab" * 32) == f"https://mempool.space/tx/{'ab' * 32}"
    assert explorer_url("Unknown chain", TX) == ""
    assert explorer_url("Ethereum", "") == ""


# ---------------------------------------------------------------------------------------------
# Who discloses, and who may change it
# ---------------------------------------------------------------------------------------------


def test_a_fund_that_does_not_disclose_answers_404_everywhere(client, alem):
    assert alem.fund.disclose_holdings is False
    disclosures_refresh()

    assert not PublicDisclosure.objects.exists()
    for url in urls(alem.fund.slug):
        assert client.get(url).status_code == 404, url
    assert alem.fund.name not in client.get(reverse("public-index")).content.decode()


def test_a_fund_that_stops_disclosing_disappears_at_the_next_refresh(client, alem):
    publish_disclosure(alem, Disclosure(True, 30, False))
    disclosures_refresh()
    assert client.get(urls(alem.fund.slug)[1]).status_code == 200

    publish_disclosure(alem, Disclosure(False, 30, False))
    disclosures_refresh()

    cache.clear()
    for url in urls(alem.fund.slug):
        assert client.get(url).status_code == 404, url


def test_disclosure_changes_only_when_a_second_administrator_publishes_it(alem):
    in_force = alem.fund.policies.get(published_at__isnull=False)
    stages = [
        services.policies.policies.StageSpec(
            s.order, s.name, s.permission, s.quorum, s.applies_from_usd
        )
        for s in in_force.stages.order_by("order")
    ]
    draft = services.policy_draft(
        actor=alem.users["fundadmin"],
        fund=alem.fund,
        stages=stages,
        disclosure=Disclosure(True, 7, True),
    )
    alem.fund.refresh_from_db()
    assert Disclosure.of(alem.fund) == Disclosure(False, 30, False)  # a draft changes nothing

    with pytest.raises(FourEyesRequired):
        services.policy_publish(actor=alem.users["fundadmin"], policy_id=draft.pk)
    services.policy_publish(actor=alem.users["fundadmin2"], policy_id=draft.pk)

    alem.fund.refresh_from_db()
    assert Disclosure.of(alem.fund) == Disclosure(True, 7, True)
    event = AuditEvent.objects.filter(fund=alem.fund, action="policy.published").latest("sequence")
    assert event.payload["disclosure"] == {
        "disclose_holdings": True,
        "disclosure_delay_days": 7,
        "disclose_deciders": True,
    }


def test_a_delay_outside_0_to_3650_days_is_refused_and_nothing_is_drafted(alem):
    from django.core.exceptions import ValidationError

    before = alem.fund.policies.count()
    with pytest.raises(ValidationError):
        services.policy_draft(
            actor=alem.users["fundadmin"],
            fund=alem.fund,
            stages=[services.policies.policies.StageSpec(1, "Risk", "review_risk", 1, D("0"))],
            disclosure=Disclosure(True, 3651, False),
        )
    assert alem.fund.policies.count() == before


def test_the_back_office_and_the_api_cannot_change_disclosure(client, alem):
    from django.test import Client

    from tests.factories import UserFactory

    admin_web = signed_in(Client(), UserFactory(is_staff=True, is_superuser=True))
    fund_url = reverse("admin:portfolio_fund_change", args=[alem.fund.pk])
    page = admin_web.get(fund_url).content.decode()
    assert 'name="disclose_holdings"' not in page
    assert 'name="disclosure_delay_days"' not in page

    signed_in(client, alem.users["fundadmin"])
    answer = client.patch(
        f"/api/v1/funds/{alem.fund.pk}/",
        {"disclose_holdings": True},
        content_type="application/json",
    )
    assert answer.status_code in (403, 404, 405)
    assert Fund.objects.get(pk=alem.fund.pk).disclose_holdings is False


# ---------------------------------------------------------------------------------------------
# What the statistics say, and whom they never name
# ---------------------------------------------------------------------------------------------


def test_statistics_count_outcomes_and_name_deciders_only_when_the_fund_says_so(alem):
    publish_disclosure(alem, Disclosure(True, 0, False))
    alem.approve_fully(alem.proposal(submit=True))
    rejected = alem.proposal(submit=True)
    alem.decide(rejected, "risk", "reject", comment="Too concentrated.")
    alem.proposal(submit=True)  # still in review
    alem.proposal()  # a draft: never submitted

    later = timezone.now() + dt.timedelta(seconds=1)
    statistics = disclosure_build(alem.fund, now=later).document["statistics"]

    assert {k: statistics[k] for k in ("submitted", "approved", "rejected", "in_review")} == {
        "submitted": 3,
        "approved": 1,
        "rejected": 1,
        "in_review": 1,
    }
    assert statistics["median_hours_per_stage"]
    assert "decisions_by_person" not in statistics
    assert alem.users["risk"].username not in str(statistics)

    publish_disclosure(alem, Disclosure(True, 0, True))
    named = disclosure_build(alem.fund, now=timezone.now() + dt.timedelta(seconds=1))
    assert named.document["statistics"]["decisions_by_person"][alem.users["risk"].username] == 2


# ---------------------------------------------------------------------------------------------
# Served cheaply: a stored document, a constant number of queries, no cookies, three languages
# ---------------------------------------------------------------------------------------------


def test_the_public_page_reads_two_queries_then_none_whatever_the_history(client, alem):
    publish_disclosure(alem, Disclosure(True, 0, False))
    proposal = alem.approve_fully(alem.proposal(submit=True))
    for number in range(5):
        fill(alem, proposal, timezone.now() - dt.timedelta(hours=1), ref=f"o{number}")
    disclosure_build(alem.fund)
    url = reverse("public-fund", args=[alem.fund.slug])

    with CaptureQueriesContext(connection) as first:
        assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as again:
        assert client.get(url).status_code == 200

    assert len(first) == 2  # the document, the checkpoints
    assert len(again) == 0  # the rendered page, from the cache


def test_no_public_answer_sets_a_cookie_and_each_may_be_cached(client, alem):
    publish_disclosure(alem, Disclosure(True, 30, False))
    disclosures_refresh()

    for url in [reverse("public-index"), *urls(alem.fund.slug)]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert not response.cookies, url
        assert response["Cache-Control"] == "public, max-age=300", url


@pytest.mark.parametrize("language", ["en", "ru", "kk"])
def test_the_public_page_speaks_the_language_asked_for(client, alem, language):
    publish_disclosure(alem, Disclosure(True, 30, False))
    disclosures_refresh()

    page = client.get(reverse("public-fund", args=[alem.fund.slug]), {"lang": language})

    assert f'<html lang="{language}">' in page.content.decode()
    assert f'href="?lang={language}"' in page.content.decode()


def test_a_history_longer_than_a_year_is_charted_by_month_end_and_kept_whole_in_the_data():
    from portfolio.public_views import _nav_charts

    start = dt.date(2024, 1, 1)
    history = [
        [(start + dt.timedelta(days=n)).isoformat(), str(1000 + n), str(500000 + n)]
        for n in range(400)
    ]

    usd, kzt = _nav_charts(history)
    short_usd, _short_kzt = _nav_charts(history[:300])

    shown = [point[0] for point in usd["data"]["series"][0]["points"]]
    assert shown[:2] == ["2024-01-31", "2024-02-29"]
    assert shown[-1] == history[-1][0]  # the newest day, whatever its month
    assert len(shown) == 14 and len(kzt["rows"]) == 14
    assert "each month" in usd["label"]
    assert len(short_usd["data"]["series"][0]["points"]) == 300


def test_the_page_lists_the_newest_purchases_and_the_csv_has_them_all(client, alem, monkeypatch):
    from portfolio import public_views

    monkeypatch.setattr(public_views, "PURCHASES_SHOWN", 2)
    publish_disclosure(alem, Disclosure(True, 0, False))
    proposal = alem.approve_fully(alem.proposal(submit=True))
    for number in range(3):
        fill(alem, proposal, timezone.now() - dt.timedelta(hours=3 - number), ref=f"o{number}")
    disclosure_build(alem.fund)

    page = client.get(reverse("public-fund", args=[alem.fund.slug])).content.decode()
    rows = client.get(urls(alem.fund.slug)[2]).content.decode().splitlines()

    assert "The 2 most recent of 3 disclosed purchases" in page
    assert len(rows) == 1 + 3
