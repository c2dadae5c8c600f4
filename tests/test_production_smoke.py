"""Production smoke test: the deployment the README describes, run on this machine from a clean
clone, and an official's decision through it in a real Chromium, before and during a Redis
outage.

The stack (``tests/production_stack.py``): Debian's nginx with ``deploy/nginx.conf`` ending TLS
under a self-signed certificate (``deploy/self-signed-cert.sh``) on a loopback port, in front of
the ``Procfile``'s web (gunicorn, two workers), worker and beat started by honcho with ``DEBUG``
off and the full production environment in a ``.env``-style file; a database of its own on the
suite's PostgreSQL server (migrated, seeded with ``seed_demo``, schedules installed, dropped at
the end) and a private Redis. Outgoing e-mail goes to files (Django's file backend); the market
data providers are the tests' fake market, so the beat's price fetches succeed offline.

Two proposals wait for the investment committee (2 of 3), each approved by the risk officer and
``committee1`` through the services before the stack starts. ``committee2`` approves the first
in the browser, which opens the ministry stage: the worker e-mails the ministry. Then Redis is
stopped: readiness fails, ``committee3`` still approves the second, its e-mail waits in the
outbox, and after Redis is back the beat's outbox relay sends it (back-off of one minute, then
the relay's next run: this wait is most of the test's time).

Skips with the reason when nginx, redis-server, openssl, Playwright or chromium is missing;
under CI (``CI`` set) it fails instead.
"""

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from django.db import connection

from tests import scratch_databases
from tests.e2e.browser import (
    DESKTOP,
    PageLog,
    browser_missing,
    expect,
    launch_chromium,
    screenshot,
    sign_in_with_form,
)
from tests.portfolio.fake_market import FakeMarket
from tests.production_stack import (
    BASE_DIR,
    HASHED_STATIC,
    Answer,
    Honcho,
    Mailbox,
    Nginx,
    OneTimeCodes,
    PrivateRedis,
    free_port,
    http_get,
    stack_missing,
    tail,
    wait_until,
    write_env_file,
)

IN_CI = bool(os.environ.get("CI"))
# Generous for a loaded two-core machine: each is a deadline for polling, not a sleep.
START_SECONDS = 120
MAIL_SECONDS = 90
# The refused e-mail waits one minute of back-off, then for the relay's next run (every minute).
RELAY_SECONDS = 200
EXPECT_MS = 30_000
NOTIONAL = "1,200,000.00"
HEALTH_CHECKS = {"database", "migrations", "broker", "audit", "prices", "outbox"}
# gunicorn's line for each web worker it starts.
BOOTING = "Booting worker with pid"

# Two proposals of the Alem fund waiting for the investment committee's second approval: the
# manager submits each, the risk officer and committee1 approve each with their authenticator's
# next code (each code is good once). Tasks run in place (eager), so the e-mails of the stages
# this opens are written now and the broker starts empty. Prints the proposals' ids.
SETUP_PROPOSALS = """
import json, time
from decimal import Decimal
from django.contrib.auth import get_user_model
from django_otp.oath import TOTP, hotp
from django_otp.plugins.otp_totp.models import TOTPDevice
from governance.services import decision_record, proposal_create, proposal_submit
from portfolio.models import Asset, Fund

def code(user):
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    clock = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    while True:
        now = clock.t()
        step = max(now, device.last_t + 1)
        if step <= now + 1:
            return f"{hotp(device.bin_key, step, device.digits):0{device.digits}d}"
        time.sleep(1)

users = {user.username: user for user in get_user_model().objects.all()}
fund = Fund.objects.get(slug="alem")
ids = []
for number in (1, 2):
    proposal = proposal_create(
        author=users["manager"],
        fund=fund,
        asset=Asset.objects.get(symbol="BNB"),
        notional_usd=Decimal("1200000.00"),
        limit_price_usd=Decimal("650"),
        rationale=f"Production smoke test, purchase {number}.",
        funding_source=fund.funding_sources.get(),
    )
    proposal_submit(proposal_id=proposal.pk, actor=users["manager"])
    for name in ("risk", "committee1"):
        user = users[name]
        decision_record(
            proposal_id=proposal.pk, user=user, verdict="approve", otp_token=code(user)
        )
    ids.append(proposal.pk)
print(json.dumps(ids))
"""


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The running deployment and what the test needs to talk to it."""

    env: dict[str, str]
    database: str
    redis: PrivateRedis
    nginx: Nginx
    honcho: Honcho
    mailbox: Mailbox
    codes: OneTimeCodes
    password: str
    proposals: list[int]
    gunicorn_port: int
    pages: list = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.nginx.origin

    def get(self, path: str) -> Answer:
        """GET through nginx over HTTPS (the certificate checked), without cookies."""
        return http_get(self.origin + path, cafile=self.nginx.certificate)

    def secrets(self) -> list[str]:
        """What no public answer may contain."""
        found = [
            self.env["SECRET_KEY"],
            self.env["ALEM_SECRETS_KEY"],
            self.env["ALEM_AUDIT_KEY"],
            self.env["DATABASE_URL"],
            self.env["REDIS_URL"],
            self.database,
            f"127.0.0.1:{self.redis.port}",
            f"127.0.0.1:{self.gunicorn_port}",
            "postgres://",
            "redis://",
        ]
        password = connection.settings_dict.get("PASSWORD")
        return found + ([password] if password else [])

    def assert_running(self) -> None:
        assert self.honcho.process.running(), "honcho exited: a Procfile process stopped"

    def logs(self) -> str:
        self.honcho.note_sessions()
        return (
            f"{self.honcho.logs()}{self.nginx.logs()}"
            f"--- redis ({self.redis.log}):\n{tail(self.redis.log, 1500)}\n"
        )

    @contextlib.contextmanager
    def diagnosed(self, name: str):
        """Any failure inside is re-raised with the tails of the stack's logs, and a screenshot
        of each open page is kept (``tests.e2e.browser.screenshot``)."""
        try:
            yield
        except Exception as exc:
            shots = []
            for number, page in enumerate(self.pages):
                with contextlib.suppress(Exception):
                    shots.append(str(screenshot(page, f"FAILED-{name}-{number}")))
            raise AssertionError(
                f"{exc}\n\nScreenshots: {shots or 'none'}\n\n{self.logs()}"
            ) from exc


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run ``manage.py`` with exactly ``env``; its output, or a failure quoting it."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def production_env(**variables: str) -> dict[str, str]:
    """The variables of the README's "Deploying" behind one nginx, with keys of this run."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALEM_SECRETS_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "ALEM_AUDIT_KEY": secrets.token_urlsafe(40),
        "ALEM_CHECKPOINT_KEY": secrets.token_hex(32),
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        "ALEM_TRUSTED_PROXIES": "1",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "WEB_CONCURRENCY": "2",
        "DJANGO_SETTINGS_MODULE": "alem.settings",
        **variables,
    }


@pytest.fixture
def stack(tmp_path):
    """The deployment, started and torn down (every process group, the database) whatever the
    test's outcome."""
    reasons = [reason for reason in (stack_missing(), browser_missing()) if reason]
    if reasons:
        if IN_CI:
            pytest.fail(f"The production smoke test must run under CI; {'; '.join(reasons)}.")
        pytest.skip("; ".join(reasons))

    with contextlib.ExitStack() as cleanup:
        market = cleanup.enter_context(FakeMarket())
        market.binance.update(
            {"BNBUSDT": "600.00", "BTCUSDT": "97000.00", "ETHUSDT": "3500.00", "SOLUSDT": "150.00"}
        )
        market.coingecko.update(
            {"binancecoin": "600.01", "bitcoin": "97010", "ethereum": "3500.5", "solana": "150.02"}
        )
        market.nbk_default = {"USD": ("500.00", "1")}

        database = f"alem_smoke_{secrets.token_hex(4)}"
        database_url = cleanup.enter_context(scratch_databases.scratch_database(database))
        redis = PrivateRedis(tmp_path / "redis")
        redis.start()
        cleanup.callback(redis.stop)

        gunicorn_port = free_port()
        nginx = Nginx(tmp_path / "nginx", upstream=f"127.0.0.1:{gunicorn_port}")
        cleanup.callback(nginx.stop)
        mail = tmp_path / "mail"
        env = production_env(
            ALLOWED_HOSTS="127.0.0.1",
            CSRF_TRUSTED_ORIGINS=nginx.origin,
            ALEM_SITE_URL=nginx.origin,
            DATABASE_URL=database_url,
            REDIS_URL=redis.url,
            EMAIL_FILE_PATH=str(mail),
            ALEM_VAR_DIR=str(tmp_path / "var"),
            STATIC_ROOT=str(tmp_path / "static"),
            GUNICORN_BIND=f"127.0.0.1:{gunicorn_port}",
            **market.urls,
        )
        process_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **env}

        # Static files do not need the database: collected while it is migrated and seeded.
        collect_log = tmp_path / "collectstatic.log"
        with collect_log.open("w") as log:
            collect = subprocess.Popen(
                [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
                cwd=BASE_DIR,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(lambda: collect.poll() is None and collect.kill())

        password = secrets.token_urlsafe(16)
        manage(process_env, "migrate", "--no-input", "--verbosity", "0")
        # First after migrate, as on a deploy: the beat runs each schedule an interval after it
        # was installed, so the sooner, the sooner the outbox relay's runs come.
        manage(process_env, "install_schedules")
        # seed_demo is a development aid and refuses to run with DEBUG off.
        manage(
            {**process_env, "DEBUG": "1"},
            "seed_demo",
            # One word: a random password may start with "-", which would read as an option.
            f"--password={password}",
            "--nav-days",
            "2",
            "--verbosity",
            "0",
        )
        manage(process_env, "fetch_prices")
        output = manage(
            {**process_env, "CELERY_TASK_ALWAYS_EAGER": "1"},
            "shell",
            "--verbosity",
            "0",
            "-c",
            SETUP_PROPOSALS,
        )
        proposals = json.loads(output.strip().splitlines()[-1])
        assert collect.wait(timeout=300) == 0, f"collectstatic failed:\n{tail(collect_log)}"

        nginx.start()
        honcho = Honcho(
            tmp_path,
            env_file=write_env_file(tmp_path / "alem.env", env),
            processes=["web", "worker", "beat"],
        )
        cleanup.callback(honcho.stop)
        stack = Stack(
            env=env,
            database=database,
            redis=redis,
            nginx=nginx,
            honcho=honcho,
            mailbox=Mailbox(mail),
            codes=OneTimeCodes(tmp_path / "var" / "demo-otp.txt"),
            password=password,
            proposals=proposals,
            gunicorn_port=gunicorn_port,
        )
        with stack.diagnosed("production-smoke-start"):
            wait_until(
                lambda: stack.assert_running() or stack.get("/health/live").status == 200,
                timeout=START_SECONDS,
                what="the web process behind nginx",
            )
            for started, count in ((BOOTING, 2), ("ready.", 1), ("beat: Starting", 1)):
                wait_until(
                    lambda started=started, count=count: (
                        stack.assert_running() or honcho.output().count(started) >= count
                    ),
                    timeout=START_SECONDS,
                    what=f"{started!r} {count} time(s) in honcho's output",
                )
            honcho.note_sessions()
        yield stack


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def assert_reveals_nothing(answer: Answer, stack: Stack) -> None:
    """A public answer: no secret, address, error text or session, and nginx's name only."""
    text = answer.body + json.dumps(answer.headers)
    assert [secret for secret in stack.secrets() if secret in text] == []
    for word in ("Traceback", "Error", "Exception", 'File "', "psycopg", "redis"):
        assert word not in answer.body, answer.body
    assert "set-cookie" not in answer.headers
    assert answer.headers.get("server") == "nginx"
    assert "no-cache" in answer.headers.get("cache-control", "")


def readiness(answer: Answer) -> tuple[int, str, dict]:
    body = json.loads(answer.body)
    assert set(body) == {"status", "checks"}, body
    return answer.status, body["status"], body["checks"]


def assert_static_files_hashed_and_served(page, statuses: dict[str, list[int]], stack: Stack):
    """Every stylesheet, script and icon the page names is a hashed name under /static/ on this
    origin; the browser got each stylesheet and script with a 200 and applied the stylesheets;
    each answers 200 through nginx, cacheable for good, with HSTS."""
    named = page.evaluate(
        """() => ({
            styles: [...document.querySelectorAll("link[rel~=stylesheet]")].map((l) => l.href),
            scripts: [...document.querySelectorAll("script[src]")].map((s) => s.src),
            icons: [...document.querySelectorAll("link[rel~=icon]")].map((l) => l.href),
            emptySheets: [...document.styleSheets].filter((s) => !s.cssRules.length).length,
        })"""
    )
    assert named["styles"] and named["scripts"], named
    assert named["emptySheets"] == 0, named
    for url in named["styles"] + named["scripts"] + named["icons"]:
        assert url.startswith(stack.origin + "/static/"), url
        assert HASHED_STATIC.search(url), f"not a hashed name: {url}"
        if url not in named["icons"]:  # headless chromium may never ask for the icon
            assert 200 in statuses.get(url, []), f"{url}: the browser got {statuses.get(url)}"
        answer = stack.get(url.removeprefix(stack.origin))
        assert answer.status == 200, (url, answer.status)
        assert "immutable" in answer.headers["cache-control"], (url, answer.headers)
        assert answer.headers["strict-transport-security"].startswith("max-age=31536000")


def open_page(browser, stack: Stack, page_log: PageLog):
    """A fresh browser context (no cookies) on the stack's origin; returns the page and the
    statuses the browser got per URL."""
    context = browser.new_context(
        base_url=stack.origin,
        ignore_https_errors=True,
        locale="en-US",
        timezone_id="Asia/Almaty",
        viewport=DESKTOP,
    )
    context.set_default_timeout(EXPECT_MS)
    statuses: dict[str, list[int]] = {}
    context.on(
        "response", lambda response: statuses.setdefault(response.url, []).append(response.status)
    )
    page = context.new_page()
    page_log.watch(page)
    stack.pages.append(page)
    return page, statuses


def approve_in_browser(browser, stack: Stack, page_log: PageLog, *, username: str, pk: int):
    """``username`` signs in with password and code, opens proposal ``pk`` from their queue and
    approves it with a fresh code; returns the page and the statuses it got."""
    page, statuses = open_page(browser, stack, page_log)
    sign_in_with_form(page, username, password=stack.password, code=stack.codes.code(username))
    expect(page).to_have_url(f"{stack.origin}/", timeout=EXPECT_MS)
    waiting = page.locator("section[aria-labelledby='waiting-heading']")
    waiting.get_by_role("link", name=f"Proposal #{pk}", exact=True).click()
    expect(page).to_have_url(f"{stack.origin}/proposals/{pk}/", timeout=EXPECT_MS)
    form = page.locator("#decision-form")
    form.get_by_label("Approve", exact=True).check()
    form.get_by_label("Comment", exact=True).fill(f"Approved by {username} in the smoke test.")
    form.get_by_label("One-time code", exact=True).fill(stack.codes.code(username))
    form.get_by_role("button", name="Record my decision").click()
    expect(page.locator("ul.messages")).to_have_text(
        "Your approval is recorded.", timeout=EXPECT_MS
    )
    return page, statuses


def decisions(stack: Stack, pk: int) -> list[tuple[str, str, int]]:
    return scratch_databases.rows(
        stack.database,
        'SELECT u.username, d.verdict, s."order" FROM governance_decision d '
        "JOIN auth_user u ON u.id = d.user_id JOIN governance_policystage s ON s.id = d.stage_id "
        "WHERE d.proposal_id = %s ORDER BY d.created_at, d.id",
        (pk,),
    )


def ministry_notice(stack: Stack, pk: int) -> list:
    """Stage-opened e-mails to the ministry about proposal ``pk`` (its link names it)."""
    return stack.mailbox.to("ministry@alem.example", containing=f"{stack.origin}/proposals/{pk}/")


def outbox_rows(stack: Stack, pk: int) -> list[tuple]:
    """(attempts, sent) of the outbox rows of the e-mail for the ministry stage of ``pk``."""
    return scratch_databases.rows(
        stack.database,
        "SELECT attempts, sent_at IS NOT NULL FROM governance_taskoutbox "
        "WHERE task = 'governance.tasks.stage_opened_notify' AND args = %s::jsonb",
        (json.dumps([pk, 1, 3]),),
    )


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_procfile_stack_behind_nginx_records_decisions_and_mails_them_through_a_redis_outage(
    stack,
):
    first, second = stack.proposals
    page_log = PageLog(stack.origin)

    with launch_chromium() as browser, stack.diagnosed("production-smoke"):
        # Given the stack just started: the health endpoints answer anyone, and say nothing
        live = stack.get("/health/live")
        assert (live.status, json.loads(live.body)) == (200, {"status": "ok"})
        assert_reveals_nothing(live, stack)
        ready = stack.get("/health/ready")
        assert readiness(ready) == (200, "ok", dict.fromkeys(HEALTH_CHECKS, "ok"))
        assert_reveals_nothing(ready, stack)
        # a load balancer may probe gunicorn itself over plain HTTP; nginx redirects plain HTTP
        direct = http_get(f"http://127.0.0.1:{stack.gunicorn_port}/health/live")
        assert direct.status == 200, direct
        plain = http_get(f"http://127.0.0.1:{stack.nginx.http_port}/accounts/login/")
        assert plain.status == 308
        assert plain.headers["location"].startswith("https://127.0.0.1"), plain.headers
        # and with DEBUG off an unknown page is a plain 404, no debug page
        missing = stack.get("/no-such-page/")
        assert missing.status == 404
        assert "URLconf" not in missing.body and "Traceback" not in missing.body

        # When committee2 signs in over HTTPS and approves the first proposal from their queue
        page, statuses = approve_in_browser(
            browser, stack, page_log, username="committee2", pk=first
        )

        # Then the session lives in a cookie that never travels over plain HTTP or to scripts
        cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
        assert (cookies["sessionid"]["secure"], cookies["sessionid"]["httpOnly"]) == (True, True)
        assert cookies["csrftoken"]["secure"] is True

        # and the pages came with HSTS, named hashed static files and got them all
        assert page_log.documents, "no HTML document was recorded"
        for response in page_log.documents:
            hsts = response.all_headers().get("strict-transport-security")
            assert hsts == "max-age=31536000; includeSubDomains", (response.url, hsts)
        assert_static_files_hashed_and_served(page, statuses, stack)
        page.goto("/")
        assert_static_files_hashed_and_served(page, statuses, stack)

        # and the committee's quorum opened the ministry stage, whose decider the worker told
        assert decisions(stack, first) == [
            ("risk", "approve", 1),
            ("committee1", "approve", 2),
            ("committee2", "approve", 2),
        ]
        notices = wait_until(
            lambda: ministry_notice(stack, first),
            timeout=MAIL_SECONDS,
            what=f"the ministry's e-mail about proposal #{first}",
        )
        assert len(notices) == 1, [str(message) for message in notices]
        notice = notices[0]
        # (Django folds the encoded subject right after "Subject:"; unfolding leaves a space)
        assert notice["Subject"].strip() == (
            f"[Alem] Your decision is needed: BNB USD {NOTIONAL} — Alem Crypto Fund"
        )
        assert 'at the stage "Ministry sign-off"' in notice.get_body().get_content()
        assert outbox_rows(stack, first) == [(1, True)]

        # When Redis stops
        stack.redis.stop()

        # Then the web process is not ready, yet alive, and still says nothing
        ready = wait_until(
            lambda: (answer := stack.get("/health/ready")).status == 503 and answer,
            timeout=60,
            what="/health/ready to answer 503 with Redis down",
        )
        assert readiness(ready) == (
            503,
            "fail",
            {**dict.fromkeys(HEALTH_CHECKS, "ok"), "broker": "fail"},
        )
        assert_reveals_nothing(ready, stack)
        live = stack.get("/health/live")
        assert (live.status, json.loads(live.body)) == (200, {"status": "ok"})

        # When committee3 signs in and approves the second proposal meanwhile
        approve_in_browser(browser, stack, page_log, username="committee3", pk=second)
        decided_at = time.monotonic()

        # Then the decision stands, and its e-mail waits in the outbox, unsent
        assert decisions(stack, second)[-1] == ("committee3", "approve", 2)
        assert outbox_rows(stack, second) == [(1, False)]
        assert ministry_notice(stack, second) == []

        # When Redis is back
        stack.redis.start()

        # Then the web process is ready again, and the relay sends the e-mail that waited
        wait_until(
            lambda: stack.get("/health/ready").status == 200,
            timeout=60,
            what="/health/ready to answer 200 with Redis back",
        )
        late = wait_until(
            lambda: stack.assert_running() or ministry_notice(stack, second),
            timeout=RELAY_SECONDS,
            what=f"the ministry's e-mail about proposal #{second} after Redis came back",
            interval=2,
        )
        waited = time.monotonic() - decided_at
        assert len(late) == 1, f"{len(late)} e-mails, {waited:.0f} s after deciding"
        assert late[0]["Subject"] == notice["Subject"]
        assert outbox_rows(stack, second) == [(2, True)]
        # and nothing was sent twice, and both web workers served throughout
        assert len(ministry_notice(stack, first)) == 1
        assert stack.honcho.output().count(BOOTING) == 2

        # and no page logged an error or a blocked resource, and every page had its CSP
        assert page_log.problems() == []
