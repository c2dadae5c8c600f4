"""Helpers of the end-to-end tests: the chromium to drive, what a page logged, screenshots,
signing in by cookie or by the form."""

import contextlib
import os
import shutil
from pathlib import Path

from django.conf import settings
from django.test import Client

from tests.web import signed_in

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    # The tests still import; the ``browser`` marker then skips them (or fails them under CI).
    expect = sync_playwright = None

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ALEM_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts")
SCREENSHOTS = ARTIFACTS / "screenshots"

# Every official signs in with this password (``officials`` gives it to the fund's people).
PASSWORD = "Correct-horse-battery-42"
# What one step (a click, a page load, an expectation) may take before it counts as failed.
STEP_TIMEOUT_MS = 10_000
DESKTOP = {"width": 1280, "height": 900}
TABLET = {"width": 768, "height": 1024}

# Chromium's console message for a blocked inline script, style or resource reads "Refused to
# ... because it violates the following Content Security Policy directive: ...".
CSP_VIOLATION = "Content Security Policy"


def browser_missing() -> str | None:
    """Why the browser tests cannot run on this machine, or None when they can."""
    if sync_playwright is None:
        return "needs Playwright's Python package (pip install -r requirements-dev.txt)"
    if CHROMIUM is None:
        return "needs Debian's chromium on PATH (apt-get install chromium)"
    return None


@contextlib.contextmanager
def launch_chromium():
    """Debian's chromium, headless, launched by Playwright and closed after the block."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class PageLog:
    """What the pages of one test logged: console errors, script errors, HTML documents.

    ``allow_http_error(status)`` accepts Chromium's "Failed to load resource: the server
    responded with a status of <status>" for a test that expects such a page (a refused code
    is a 403, a foreign proposal a 404). Nothing else is ever accepted, CSP violations least of
    all.
    """

    def __init__(self, origin: str):
        self.origin = origin
        self.allowed_statuses: set[int] = set()
        self.clear()

    def clear(self) -> None:
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.documents = []

    def watch(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))
        page.on("response", self._on_response)

    def allow_http_error(self, status: int) -> None:
        self.allowed_statuses.add(status)

    def _on_console(self, message) -> None:
        url = message.location.get("url", "")
        if message.type == "error":
            self.console_errors.append(f"{url}: {message.text}")

    def _on_response(self, response) -> None:
        if response.url.startswith(self.origin) and response.request.resource_type == "document":
            self.documents.append(response)

    def _expected(self, text: str) -> bool:
        return CSP_VIOLATION not in text and any(
            f"responded with a status of {status} " in text for status in self.allowed_statuses
        )

    def problems(self) -> list[str]:
        """Everything wrong, in words; empty when the pages behaved. Call before the pages'
        contexts close (the response headers are read from the browser)."""
        found = [
            f"console error: {text}" for text in self.console_errors if not self._expected(text)
        ]
        found += [f"script error: {text}" for text in self.page_errors]
        for response in self.documents:
            headers = response.all_headers()
            if not headers.get("content-type", "").startswith("text/html"):
                continue
            policy = headers.get("content-security-policy", "")
            if "default-src 'self'" not in policy:
                found.append(
                    f"no Content-Security-Policy on {response.status} {response.url}: {policy!r}"
                )
        return found


def screenshot(page, name: str) -> Path:
    """A full-page screenshot kept as an artifact of the test run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def signed_in_cookie(user, url: str) -> dict:
    """The session cookie of ``user`` signed in with a verified second factor.

    Much faster than the sign-in form, for tests about something else: the session is made by
    ``tests.web.signed_in`` (force_login, then marked verified by the user's device, which is
    enrolled if the user has none).
    """
    client = signed_in(Client(), user)
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "url": url,
    }


def sign_in_with_form(page, username: str, *, password: str = PASSWORD, code: str = "") -> None:
    """Fill in and send the sign-in form (the code only when one is given)."""
    page.goto("/accounts/login/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    if code:
        page.get_by_label("One-time code", exact=True).fill(code)
    page.get_by_role("button", name="Sign in", exact=True).click()
