"""The Content-Security-Policy covers the whole site: the back office and the API docs carry the
header and no inline script or style either (the officials' pages are checked by their own
tests, and in Chromium by the end-to-end tests)."""

import re

import pytest

from tests.factories import UserFactory
from tests.web import signed_in


def inline_code(html: str) -> list[str]:
    scripts = [
        tag
        for tag in re.findall(r"<script\b[^>]*>", html)
        if "src=" not in tag and "application/json" not in tag
    ]
    return scripts + re.findall(r"<style\b[^>]*>", html) + re.findall(r'\sstyle\s*=\s*"', html)


@pytest.fixture
def superuser_client(client, db):
    return signed_in(client, UserFactory(username="root", is_staff=True, is_superuser=True))


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/governance/proposal/",
        "/admin/governance/proposal/{proposal}/change/",
        "/admin/portfolio/fund/{fund}/change/",
        "/admin/auth/user/add/",
        "/api/docs/",
    ],
)
def test_back_office_and_api_docs_have_the_policy_and_no_inline_code(alem, superuser_client, path):
    url = path.format(proposal=alem.proposal().pk, fund=alem.fund.pk)

    response = superuser_client.get(url)

    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert inline_code(response.content.decode()) == []


def test_a_page_outside_the_users_funds_is_the_sites_404_page(client, alem):
    stranger = UserFactory()
    signed_in(client, stranger)

    response = client.get(f"/proposals/{alem.proposal().pk}/", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and 'class="site-header"' in html
    assert inline_code(html) == []
