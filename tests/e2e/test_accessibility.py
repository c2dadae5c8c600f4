"""Every key page passes axe-core's WCAG 2.1 A and AA rules in a real browser: labels, names,
contrast, landmarks, language, tables, focusable controls.

axe-core (Deque, MPL-2.0) comes bundled in the ``axe-playwright-python`` package, so nothing is
downloaded. It runs in the page through Playwright's evaluate, which the Content-Security-Policy
does not govern; the pages' own scripts stay under the strict policy.
"""

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.conf import settings

from tests.e2e.browser import TABLET, expect

WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}

axe = Axe()


def violations(page) -> list[str]:
    """axe's findings on the page as it is now: rule, impact, and the elements it names."""
    found = axe.run(page, options=WCAG_AA).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in found
    ]


def pages_of(alem, waiting, filled) -> dict[str, tuple[str | None, str]]:
    fund = alem.fund.pk
    return {
        "sign-in": (None, "/accounts/login/"),
        "queue": ("risk", "/"),
        "proposal with the decision form": ("risk", f"/proposals/{waiting.pk}/"),
        "proposal with the fill form": ("treasury", f"/proposals/{filled.pk}/"),
        "new proposal": ("manager", f"/funds/{fund}/proposals/new/"),
        "portfolio": ("risk", f"/funds/{fund}/"),
        "audit log": ("auditor", "/audit/"),
        "not found": ("risk", "/proposals/999999/"),
    }


@pytest.mark.browser
@pytest.mark.parametrize(
    ("viewport", "language"),
    [(None, "en"), (TABLET, "en"), (None, "kk")],
    ids=["laptop", "tablet", "laptop-kazakh"],
)
def test_the_key_pages_pass_the_wcag_aa_rules(
    busy_fund, open_page, page_log, live_server, viewport, language
):
    alem, waiting, filled = busy_fund
    page_log.allow_http_error(404)
    pages = {}
    found = []
    for name, (username, url) in pages_of(alem, waiting, filled).items():
        if username not in pages:
            pages[username] = open_page(
                alem.users[username] if username else None, viewport=viewport
            )
            pages[username].context.add_cookies(
                [{"name": settings.LANGUAGE_COOKIE_NAME, "value": language, "url": live_server.url}]
            )
        page = pages[username]
        page.goto(url)
        expect(page.locator("html")).to_have_attribute("lang", language)
        expect(page.locator("main")).to_be_visible()
        found += [f"{name}: {problem}" for problem in violations(page)]

    assert not found, "axe found WCAG A/AA violations:\n" + "\n".join(found)
