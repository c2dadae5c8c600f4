"""The public pages in real Chromium: no sign-in, the three languages, axe's WCAG A/AA rules,
the strict Content-Security-Policy (the page log fails the test on any violation), the NAV chart
drawn by the site's own script, and the feeds answering."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from portfolio.disclosure import Disclosure, disclosure_build
from portfolio.models import Asset
from portfolio.services import nav_snapshot_take
from tests.e2e.browser import expect
from tests.e2e.test_accessibility import violations
from tests.portfolio.test_public_disclosure import TX, fill, publish_disclosure


@pytest.fixture
def disclosing(alem):
    cache.clear()
    Asset.objects.filter(pk=alem.asset.pk).update(chain="BNB Smart Chain")
    publish_disclosure(alem, Disclosure(True, 30, False))
    today = timezone.localdate()
    for days_ago in range(40, 30, -1):
        nav_snapshot_take(fund=alem.fund, day=today - dt.timedelta(days=days_ago))
    proposal = alem.approve_fully(alem.proposal(submit=True, notional_usd=Decimal("100000")))
    fill(alem, proposal, timezone.now() - dt.timedelta(days=31), quantity="10", ref="old")
    fill(alem, proposal, timezone.now() - dt.timedelta(days=1), quantity="12", ref="new")
    disclosure_build(alem.fund)
    yield alem
    cache.clear()


@pytest.mark.browser
@pytest.mark.parametrize("language", ["en", "ru", "kk"])
def test_the_public_page_passes_axe_in_each_language_without_signing_in(disclosing, page, language):
    response = page.goto(f"/public/{disclosing.fund.slug}/?lang={language}")

    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.locator("h1")).to_have_text(disclosing.fund.name)
    expect(page.locator(f'a[href="https://bscscan.com/tx/{TX}"]')).to_have_count(1)
    expect(page.locator(".chart svg").first).to_be_visible()
    assert "set-cookie" not in response.all_headers()
    assert ">12<" not in page.content()  # bought a day ago: inside the 30-day delay
    found = violations(page)
    assert not found, "axe found WCAG A/AA violations:\n" + "\n".join(found)

    page.goto(f"/public/?lang={language}")
    expect(page.get_by_role("link", name=disclosing.fund.name)).to_be_visible()
    assert not violations(page)
