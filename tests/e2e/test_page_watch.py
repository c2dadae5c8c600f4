"""The watch every end-to-end test relies on (``tests.e2e.browser.PageLog``) does catch what it
is there to catch: a page the Content-Security-Policy blocks, and a page served without one.

The two pages are answered by the browser's request routing on the live server's origin, not by
the app, so the app's own policy cannot hide a broken watch.
"""

import pytest

INLINE_PAGE = (
    "<!DOCTYPE html><html><head><title>probe</title></head><body>"
    "<script>document.title = 'ran';</script></body></html>"
)


@pytest.mark.browser
def test_the_watch_reports_csp_violations_and_pages_without_a_policy(page, page_log, live_server):
    # Given two pages of the site's origin: one with an inline script its policy forbids, one
    # without any policy
    page.route(
        "**/probe/strict/",
        lambda route: route.fulfill(
            status=200,
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "default-src 'self'"},
            body=INLINE_PAGE,
        ),
    )
    page.route(
        "**/probe/open/",
        lambda route: route.fulfill(
            status=200, content_type="text/html; charset=utf-8", body="<p>no policy</p>"
        ),
    )

    # When the browser opens both
    page.goto("/probe/strict/")
    strict_title = page.title()
    page.goto("/probe/open/")

    # Then the inline script did not run, and the watch names both problems
    problems = page_log.problems()
    assert strict_title == "probe"
    assert len(problems) == 2, problems
    assert problems[0].startswith("console error: ")
    assert "violates the following Content Security Policy directive" in problems[0]
    assert problems[1] == f"no Content-Security-Policy on 200 {live_server.url}/probe/open/: ''"

    # (The watch is cleared so this test's own end-of-test check passes.)
    page_log.clear()
