"""End-to-end tests: the officials' pages in a real Chromium, driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``), never one Playwright downloads
(do not run ``playwright install``). A test marked ``browser`` skips with the reason when
Playwright's Python package or chromium is missing, except under CI (``CI`` set), where it
fails: CI must never pass by skipping.

The pages are served by pytest-django's ``live_server`` (so the database is transactional and
emptied after each test). Every page a test opens is watched (``tests.e2e.browser.PageLog``): at
the end of the test there must be no console error (a Content-Security-Policy violation is one),
no uncaught script error, and every HTML document the app served must carry a
Content-Security-Policy header.

Screenshots go to ``var/test-artifacts/screenshots/`` (``$ALEM_TEST_ARTIFACTS/screenshots/``
when that variable names another folder); a failed test leaves one of each page it had open.
"""

import os
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from governance import services
from tests.e2e.browser import (
    DESKTOP,
    PASSWORD,
    SCREENSHOTS,
    STEP_TIMEOUT_MS,
    PageLog,
    browser_missing,
    launch_chromium,
    screenshot,
    signed_in_cookie,
)
from tests.factories import FundBuilder, otp_code, otp_device

IN_CI = bool(os.environ.get("CI"))
# People whose roles need an authenticator before they may use the site (alem.middleware).
DECIDERS = ("risk", "committee1", "committee2", "committee3", "ministry", "treasury")


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") and (reason := browser_missing()):
        if IN_CI:
            pytest.fail(f"The browser tests must run under CI; this machine {reason}.")
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Kept on the item so the page fixture knows, at teardown, whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# ---------------------------------------------------------------------------------------------
# The browser and its pages
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    """One headless chromium per test module; each test gets fresh contexts from it.

    Playwright's sync API keeps an asyncio event loop marked as running in this thread for as
    long as Playwright is started, and Django then refuses every ORM call from the thread (the
    test's setup, its database assertions, the flush after it) with SynchronousOnlyOperation.
    Nothing here is async (the loop only talks to the browser; the app runs in the live
    server's own thread), so DJANGO_ALLOW_ASYNC_UNSAFE is set for exactly the time Playwright
    runs, and not for the rest of the suite.
    """
    if reason := browser_missing():
        if IN_CI:
            pytest.fail(f"The browser tests must run under CI; this machine {reason}.")
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with launch_chromium() as browser:
            yield browser


@pytest.fixture(autouse=True)
def celery_eager():
    """Tasks queued on commit (e-mails to deciders) run at once, inside the live server."""
    from alem.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.fixture
def page_log(live_server) -> PageLog:
    return PageLog(live_server.url)


@pytest.fixture
def open_page(chromium, live_server, page_log, request):
    """Open a page in a fresh browser context (its own cookies), optionally signed in.

    ``open_page(user)`` signs ``user`` in by cookie, as after a two-factor sign-in;
    ``open_page()`` opens an anonymous page; ``viewport`` defaults to a desktop window. At the
    end of the test every page's log is checked (``PageLog.problems``) and the contexts closed.
    """
    contexts = []
    for stale in SCREENSHOTS.glob(f"FAILED-{request.node.name}-*.png"):
        stale.unlink()

    def open_(user=None, *, viewport: dict | None = None):
        context = chromium.new_context(
            base_url=live_server.url,
            locale="en-US",
            timezone_id="Asia/Almaty",
            viewport=viewport or DESKTOP,
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        contexts.append(context)
        # The selectors read English labels, whatever the machine's or the settings' language.
        cookies = [{"name": settings.LANGUAGE_COOKIE_NAME, "value": "en", "url": live_server.url}]
        if user is not None:
            cookies.append(signed_in_cookie(user, live_server.url))
        context.add_cookies(cookies)
        page = context.new_page()
        page_log.watch(page)
        return page

    yield open_

    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for number, context in enumerate(contexts):
            for page in context.pages:
                screenshot(page, f"FAILED-{request.node.name}-{number}")
    problems = page_log.problems()
    for context in contexts:
        context.close()
    assert not problems, "The pages misbehaved:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page):
    """An anonymous page in a fresh context, watched like every other."""
    return open_page()


# ---------------------------------------------------------------------------------------------
# The fund's people
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def alem(transactional_db):
    """The Alem-like fund, committed for the live server's threads: built per test here, not
    shared per module as elsewhere (``tests/conftest.py``)."""
    return FundBuilder.alem_like()


@pytest.fixture
def officials(alem):
    """The ``alem`` fund whose people sign in with ``PASSWORD``; every decider and the treasury
    operator has a confirmed authenticator, the manager and the auditor have none."""
    for user in alem.users.values():
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
    for name in DECIDERS:
        otp_device(alem.users[name])
    return alem


@pytest.fixture
def busy_fund(officials):
    """A fund with one proposal waiting for the risk officer and one approved and half filled:
    the queue, the proposal pages and the portfolio all have rows."""
    alem = officials
    filled = alem.approve_fully(alem.proposal(submit=True, notional_usd=Decimal("2000000.00")))
    services.execution_record(
        proposal_id=filled.pk,
        actor=alem.users["treasury"],
        quantity=Decimal("100"),
        price_usd=Decimal("600.00"),
        fee_usd=Decimal("1.25"),
        venue="Binance",
        external_ref="BINANCE-ORDER-0001",
        executed_at=timezone.now(),
        otp_token=otp_code(alem.users["treasury"]),
    )
    waiting = alem.proposal(submit=True, rationale="Add to the position. " * 20)
    return alem, waiting, filled
