"""Alem in Russian and Kazakh: complete, current catalogues and pages with no English left.

The catalogues live in ``alem/locale/<lang>/LC_MESSAGES/django.po`` (and the compiled ``.mo``).
``make messages`` refreshes them from the source and compiles them. These tests check that

- every entry of the Russian and Kazakh catalogues is translated (every plural form), none is
  fuzzy, the placeholders of each translation are the English text's, and the ``.mo`` holds
  exactly what the ``.po`` says (it was compiled after the last change);
- the catalogues hold every string marked in the source and nothing else (``makemessages`` on a
  copy of the project finds the same messages);
- each page, visited in English, Russian and Kazakh, shows no word of the other script once the
  data the test created (fund, user and asset names, the rationale) is set aside;
- dates are shown in Almaty time and in each language's format, numbers grouped per language.
"""

import ast
import datetime as dt
import gettext
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import get_format
from django.utils.timesince import timesince
from django.utils.translation import get_language_info

from governance import services
from governance.api_tokens import api_token_issue, api_tokens_revoke
from governance.models import ApiToken, AuditEvent, PolicyStage, Proposal
from governance.views.audit import payload_summary
from governance.vocabulary import REFUSALS
from tests.factories import otp_code
from tests.web import signed_in

D = Decimal
LOCALE_DIR = Path(settings.BASE_DIR) / "alem" / "locale"
TRANSLATED = ["ru", "kk"]
# Django's own plural rules for these languages (its catalogues use the same, so they merge).
NPLURALS = {"ru": 4, "kk": 2}


# ---------------------------------------------------------------------------------------------
# Reading a .po file
# ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False
    line: int = 0

    @property
    def key(self) -> tuple:
        return (self.msgctxt, self.msgid, self.msgid_plural)


KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")$')


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file as gettext writes them (header first, msgid "")."""
    entries: list[Entry] = []
    entry, target = None, None

    def finish():
        nonlocal entry, target
        if entry is not None and (entry.msgstr or entry.msgid):
            entries.append(entry)
        entry, target = None, None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#~"):
            entry = entry or Entry(line=number)
            entry.obsolete = True
            continue
        if line.startswith("#,"):
            if entry is not None and (entry.msgid or entry.msgstr):
                finish()
            entry = entry or Entry(line=number)
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            continue
        if line.startswith("#"):
            continue
        entry = entry or Entry(line=number)
        if line.startswith('"'):
            text = ast.literal_eval(line)
        else:
            match = KEYWORD.match(line)
            assert match, f"{path}:{number}: cannot read {line!r}"
            keyword, index, quoted = match.groups()
            if keyword == "msgid" and (entry.msgid or entry.msgstr):
                finish()
                entry = Entry(line=number)
            target = (keyword, int(index) if index else 0)
            text = ast.literal_eval(quoted)
            if keyword.startswith("msgstr"):
                entry.msgstr.setdefault(target[1], "")
        keyword, index = target
        if keyword == "msgid":
            entry.msgid += text
        elif keyword == "msgctxt":
            entry.msgctxt = (entry.msgctxt or "") + text
        elif keyword == "msgid_plural":
            entry.msgid_plural = (entry.msgid_plural or "") + text
        else:
            entry.msgstr[index] += text
    finish()
    return entries


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "django.po"


def catalogue(lang: str) -> tuple[Entry, list[Entry]]:
    """The header and the messages of a language's catalogue."""
    entries = read_po(po_path(lang))
    assert entries and entries[0].msgid == "", "the catalogue starts with its header"
    return entries[0], entries[1:]


PLACEHOLDER = re.compile(r"%(?:\([^)]+\))?[-#0 +]*\d*(?:\.\d+)?[sdifr%]|\{[a-z_]\w*\}")


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


def where(entry: Entry) -> str:
    return f"line {entry.line}: {entry.msgid[:60]!r}"


# ---------------------------------------------------------------------------------------------
# a. The catalogues are complete
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalogue_header_names_the_language_and_djangos_plural_rule(lang):
    header, _messages = catalogue(lang)

    fields = dict(line.split(": ", 1) for line in header.msgstr[0].splitlines() if ": " in line)
    assert "fuzzy" not in header.flags
    assert fields["Language"] == lang
    assert fields["Content-Type"] == "text/plain; charset=UTF-8"
    assert fields["Plural-Forms"].startswith(f"nplurals={NPLURALS[lang]};")


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_is_translated_in_every_plural_form_and_none_is_fuzzy(lang):
    _header, messages = catalogue(lang)

    untranslated = []
    for entry in messages:
        forms = NPLURALS[lang] if entry.msgid_plural else 1
        if (
            entry.obsolete
            or "fuzzy" in entry.flags
            or sorted(entry.msgstr) != list(range(forms))
            or not all(text.strip() for text in entry.msgstr.values())
        ):
            untranslated.append(where(entry))

    assert len(messages) > 500
    assert untranslated == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_keep_the_placeholders_of_the_english_text(lang):
    _header, messages = catalogue(lang)

    mismatched = []
    for entry in messages:
        for index, text in entry.msgstr.items():
            english = entry.msgid_plural if entry.msgid_plural and index else entry.msgid
            if placeholders(text) != placeholders(english):
                mismatched.append(f"{where(entry)} [{index}] {text!r}")

    assert mismatched == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_compiled_catalogue_holds_exactly_what_the_po_says(lang):
    _header, messages = catalogue(lang)
    expected = {}
    for entry in messages:
        msgid = f"{entry.msgctxt}\x04{entry.msgid}" if entry.msgctxt else entry.msgid
        if entry.msgid_plural:
            expected.update({(msgid, i): text for i, text in entry.msgstr.items()})
        else:
            expected[msgid] = entry.msgstr[0]

    with open(po_path(lang).with_suffix(".mo"), "rb") as mo:
        compiled = dict(gettext.GNUTranslations(mo)._catalog)
    compiled.pop("", None)  # the header

    assert compiled == expected, "run `make messages` to compile the catalogues again"


# ---------------------------------------------------------------------------------------------
# b. The catalogues are current
# ---------------------------------------------------------------------------------------------

# What makemessages reads of the project: everything but these (as `make messages` says).
NOT_SCANNED = (".venv", "var", "staticfiles", "tests", ".git", "node_modules")


def test_catalogues_hold_every_string_marked_in_the_source_and_no_other(tmp_path):
    if shutil.which("xgettext") is None:
        if os.environ.get("CI"):
            pytest.fail("makemessages needs GNU gettext (Debian's package gettext) under CI")
        pytest.skip("makemessages needs GNU gettext (Debian's package gettext)")

    # Given a copy of the project without its catalogues
    root = Path(settings.BASE_DIR)
    copy = tmp_path / "alem-project"
    shutil.copytree(
        root,
        copy,
        ignore=shutil.ignore_patterns(*NOT_SCANNED, "__pycache__", "*.pyc", "*.po", "*.mo"),
    )
    (copy / "alem" / "locale").mkdir(exist_ok=True)

    # When makemessages collects the marked strings there
    result = subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "ru", "--no-obsolete"]
        + [f"--ignore={name}" for name in NOT_SCANNED],
        cwd=copy,
        env={**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "alem.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    # Then the committed catalogues have the same messages
    found = {e.key for e in read_po(copy / "alem" / "locale" / "ru" / "LC_MESSAGES" / "django.po")}
    for lang in TRANSLATED:
        committed = {e.key for e in read_po(po_path(lang))}
        assert sorted(found - committed, key=str) == [], f"not in the {lang} catalogue yet"
        assert sorted(committed - found, key=str) == [], f"no longer in the source ({lang})"


# ---------------------------------------------------------------------------------------------
# c. Every page in every language
# ---------------------------------------------------------------------------------------------

# Attributes whose values people read (or hear, through a screen reader), and the data
# attributes whose texts queue.js and charts.js show.
TEXT_ATTRIBUTES = {"placeholder", "aria-label", "title", "alt", "data-new-message", "data-empty"}
BUTTON_INPUTS = {"submit", "button", "reset"}


# Elements whose text is for machines or is the record itself: a hash, the authenticator's key,
# the audit event's payload as stored.
MACHINE_TEXT = {"style", "code", "pre"}


class VisibleText(HTMLParser):
    """The text a person reads on a page: text outside <script> and the elements above, the
    attributes above, the values of buttons, and the strings of JSON data blocks (chart series
    and labels)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.json_block: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            is_json = attributes.get("type") == "application/json"
            self.json_block = [] if is_json else None
            self.hidden += 0 if is_json else 1
        elif tag in MACHINE_TEXT:
            self.hidden += 1
        self.parts += [v for k, v in attrs if k in TEXT_ATTRIBUTES and v]
        if tag == "input" and attributes.get("type") in BUTTON_INPUTS and attributes.get("value"):
            self.parts.append(attributes["value"])

    def handle_endtag(self, tag):
        if tag == "script" and self.json_block is not None:
            self.parts += json_strings(json.loads("".join(self.json_block)))
            self.json_block = None
        elif tag == "script" or tag in MACHINE_TEXT:
            self.hidden = max(0, self.hidden - 1)

    def handle_data(self, data):
        if self.json_block is not None:
            self.json_block.append(data)
        elif not self.hidden:
            self.parts.append(data)


def json_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in json_strings(v)]
    return []


def visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.parts)


# Words that stay as they are in every language: currency codes, names of products, the
# standards they follow, the languages' own names in the switcher, and Alem itself.
KEPT_WORDS = [
    "Google Authenticator",
    "Microsoft Authenticator",
    "FreeOTP",
    "Binance",
    "CoinGecko",
    "English",
    "Русский",
    "Қазақша",
    "Alem",
    "TOTP",
    "USDT",
    "USD",
    "KZT",
    "UTC",
    "CSV",
    "API",
]
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\S+@\S+\.\w+")
LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
CYRILLIC_WORD = re.compile(r"[\u0400-\u04ff]+")
KAZAKH_LETTERS = re.compile(r"[әғқңөұүһіӘҒҚҢӨҰҮҺІ]")


def foreign_words(text: str, lang: str, data: list[str]) -> list[str]:
    """Words of the wrong script once the data and the words kept in every language are out."""
    text = URL.sub(" ", text)
    for value in sorted({*data, *KEPT_WORDS}, key=len, reverse=True):
        text = text.replace(value, " ")
    pattern = CYRILLIC_WORD if lang == "en" else LATIN_WORD
    return sorted(set(pattern.findall(text)))


@dataclass
class Visit:
    name: str
    user: object | None
    url: str
    method: str = "get"
    data: dict | None = None
    status: int = 200
    follow: bool = False
    verified: bool = True  # signed in with the second factor (tests.web.signed_in)


ADDRESS = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def world(alem):
    """Proposals in every state a page shows, with data chosen to carry no words: comments in
    digits, a venue that is a brand, references in hex."""
    users = alem.users
    in_review = alem.proposal(submit=True)
    approved = alem.approve_fully(alem.proposal(submit=True))
    services.execution_record(
        proposal_id=approved.pk,
        actor=users["treasury"],
        quantity=D("10"),
        price_usd=D("600.00"),
        fee_usd=D("1.50"),
        venue="Binance",
        external_ref="0x1234567890",
        executed_at=timezone.now(),
        otp_token=otp_code(users["treasury"]),
    )
    returned = alem.proposal(submit=True)
    alem.decide(returned, "risk", verdict="request_changes", comment="1234 5678")
    draft = alem.proposal()
    # API tokens named in digits: one that works, one signed out.
    api_token_issue(user=users["treasury"], name="1234")
    ended, _value = api_token_issue(user=users["treasury"], name="5678")
    api_tokens_revoke(tokens=ApiToken.objects.filter(pk=ended.pk), reason="signed_out")
    return {"in_review": in_review, "approved": approved, "returned": returned, "draft": draft}


def visits(alem, world) -> list[Visit]:
    users = alem.users
    fund = alem.fund.pk
    detail = lambda key: reverse("proposal-detail", args=[world[key].pk])  # noqa: E731
    in_review = world["in_review"]
    bad_proposal = {"asset": "", "notional_usd": "-1", "limit_price_usd": "abc", "rationale": ""}
    return [
        Visit("sign-in", None, reverse("login")),
        Visit(
            "sign-in, wrong password",
            None,
            reverse("login"),
            "post",
            {"username": "manager", "password": "wrong", "otp_token": ""},
        ),
        Visit("queue of the risk officer", users["risk"], reverse("queue")),
        Visit("queue updates", users["risk"], reverse("queue-updates") + "?known=d0.1"),
        Visit("queue of the manager", users["manager"], reverse("queue")),
        Visit("queue of the treasury", users["treasury"], reverse("queue")),
        Visit("queue of the auditor", users["auditor"], reverse("queue")),
        Visit("proposal in review with the decision form", users["risk"], detail("in_review")),
        Visit("proposal in review, its author", users["manager"], detail("in_review")),
        Visit("approved proposal with the fill form", users["treasury"], detail("approved")),
        Visit("approved proposal, an approver", users["committee1"], detail("approved")),
        Visit("returned proposal, its author", users["manager"], detail("returned")),
        Visit("draft, its author", users["manager"], detail("draft")),
        Visit(
            "new proposal form",
            users["manager"],
            reverse("proposal-new", args=[fund]),
        ),
        Visit(
            "new proposal form with errors",
            users["manager"],
            reverse("proposal-new", args=[fund]),
            "post",
            bad_proposal,
            status=400,
        ),
        Visit(
            "edit form of a returned proposal",
            users["manager"],
            reverse("proposal-edit", args=[world["returned"].pk]),
        ),
        Visit(
            "a decision with a wrong code, refused",
            users["risk"],
            reverse("proposal-decide", args=[in_review.pk]),
            "post",
            {"verdict": "approve", "comment": "", "stage_order": 1, "otp_token": "000000"},
            status=403,
        ),
        Visit("audit log", users["auditor"], reverse("audit-log")),
        Visit(
            "audit log, wrong filters",
            users["auditor"],
            reverse("audit-log") + "?date_from=2026-02-01&date_to=2026-01-01",
            status=400,
        ),
        Visit(
            "audit log refused to a manager", users["manager"], reverse("audit-log"), status=None
        ),
        Visit(
            "a proposal that does not exist",
            users["manager"],
            reverse("proposal-detail", args=[999999]),
            status=404,
        ),
        Visit(
            "new proposal, not a manager",
            users["treasury"],
            reverse("proposal-new", args=[fund]),
            status=403,
        ),
        Visit("portfolio", users["auditor"], reverse("portfolio", args=[fund])),
        Visit(
            "portfolio, a year of NAV",
            users["manager"],
            reverse("portfolio", args=[fund]) + "?days=365",
        ),
        Visit(
            "enrolment of a decider without authenticator",
            users["committee3"],
            reverse("otp-enrol"),
            verified=False,
        ),
        Visit("authenticator already enrolled", users["committee1"], reverse("otp-enrol")),
        Visit("API tokens", users["treasury"], reverse("api-tokens")),
        Visit(
            "submitting a draft, then its page",
            users["manager"],
            reverse("proposal-submit", args=[world["draft"].pk]),
            "post",
            {},
            follow=True,
        ),
    ]


def data_values(alem, world) -> list[str]:
    """What pages show as it is stored: the names, symbols and rationales the test created,
    the audit log's record (payload summaries, action codes) and the stable codes of refusals,
    which pages show next to the rule in words."""
    values = [alem.fund.name, alem.asset.symbol, alem.asset.name, alem.funding_source.name]
    values += [user.username for user in alem.users.values()]
    values += [proposal.rationale for proposal in world.values()]
    stages = PolicyStage.objects.filter(policy__fund=alem.fund)
    values += list(stages.values_list("name", flat=True))
    values += ["Authenticator"]  # the name of the device tests.factories.otp_device enrols
    values += list(ApiToken.objects.values_list("prefix", flat=True))  # random characters
    # The language switcher names each language in itself, on every page.
    values += [get_language_info(code)["name_local"] for code, _ in settings.LANGUAGES]
    for event in AuditEvent.objects.all():
        values += [event.action, payload_summary(event.payload)]
    values += list(REFUSALS)
    return values


def read_page(visit: Visit, lang: str) -> str:
    client = Client()
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = lang
    if visit.user is not None:
        if visit.verified:
            signed_in(client, visit.user)
        else:
            client.force_login(visit.user)
    send = client.post if visit.method == "post" else client.get
    response = send(visit.url, visit.data or {}, follow=visit.follow, **ADDRESS)
    if visit.status is not None:
        assert response.status_code == visit.status, (visit.name, response.status_code)
    assert response["Content-Language"] == lang, visit.name
    return response.content.decode()


@pytest.mark.parametrize("lang", ["en", "ru", "kk"])
def test_every_page_speaks_the_chosen_language(alem, world, lang):
    problems = {}
    for visit in visits(alem, world):
        text = visible_text(read_page(visit, lang))
        words = foreign_words(text, lang, data_values(alem, world))
        if words:
            problems[visit.name] = words
        if lang == "kk":
            assert KAZAKH_LETTERS.search(text), f"{visit.name}: no Kazakh letter on the page"

    report = "\n".join(f"  {page}: {', '.join(words)}" for page, words in problems.items())
    assert not problems, f"words not in {lang} on these pages:\n{report}"


@pytest.mark.parametrize("lang", ["en", "ru", "kk"])
def test_the_lockout_page_speaks_the_chosen_language(alem, lang):
    client = Client()
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = lang
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(
            reverse("login"), {"username": "manager", "password": "wrong"}, **ADDRESS
        )

    assert response.status_code == 429
    allowed = ["manager"] + [
        get_language_info(code)["name_local"] for code, _ in settings.LANGUAGES
    ]
    words = foreign_words(visible_text(response.content.decode()), lang, allowed)
    assert words == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_compliance_check_messages_read_in_the_language(alem, client, lang):
    proposal = alem.proposal(submit=True)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = lang
    signed_in(client, alem.users["risk"])

    html = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()

    data = data_values(alem, {"in_review": proposal})
    assert foreign_words(visible_text(html), lang, data) == []


# ---------------------------------------------------------------------------------------------
# d. Dates in Almaty time, numbers grouped per language
# ---------------------------------------------------------------------------------------------


def test_kazakh_dates_and_numbers_follow_alems_kazakh_formats():
    # Django ships no Kazakh formats: alem/formats/kk/formats.py supplies them.
    assert settings.FORMAT_MODULE_PATH and "alem.formats" in settings.FORMAT_MODULE_PATH, (
        'settings.FORMAT_MODULE_PATH = ["alem.formats"] is missing'
    )
    assert get_format("DECIMAL_SEPARATOR", "kk") == ","
    assert get_format("THOUSAND_SEPARATOR", "kk") == "\xa0"
    assert get_format("DATETIME_FORMAT", "kk") == "Y ж. j E, H:i"


SUBMITTED_AT = dt.datetime(2025, 1, 15, 4, 7, tzinfo=dt.UTC)  # 09:07 in Almaty (UTC+5)
SUBMITTED_SHOWN = {
    "en": "Jan. 15, 2025, 9:07 a.m.",
    "ru": "15 января 2025 г. 9:07",
    "kk": "2025 ж. 15 қаңтар, 09:07",
}
NOTIONAL_SHOWN = {"en": "500,000.00", "ru": "500\xa0000,00", "kk": "500\xa0000,00"}
CASH_SHOWN = {"en": "25,000,000.00", "ru": "25\xa0000\xa0000,00", "kk": "25\xa0000\xa0000,00"}


@pytest.mark.parametrize("lang", ["en", "ru", "kk"])
def test_proposal_page_shows_almaty_time_and_numbers_in_the_language(alem, client, lang):
    # Given a proposal submitted at 04:07 UTC, 09:07 in Almaty
    proposal = alem.proposal(submit=True)
    Proposal.objects.filter(pk=proposal.pk).update(submitted_at=SUBMITTED_AT)

    # When its page is read in the language
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = lang
    signed_in(client, alem.users["risk"])
    html = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()

    # Then the time is Almaty's, written the language's way, and the notional is grouped
    assert '<time datetime="2025-01-15T09:07:00+05:00">' + SUBMITTED_SHOWN[lang] in html
    assert f"<dd>{NOTIONAL_SHOWN[lang]}</dd>" in html


@pytest.mark.parametrize("lang", ["en", "ru", "kk"])
def test_portfolio_page_groups_the_cash_per_language(alem, client, lang):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = lang
    signed_in(client, alem.users["auditor"])

    html = client.get(reverse("portfolio", args=[alem.fund.pk])).content.decode()

    assert CASH_SHOWN[lang] in html


@pytest.mark.parametrize(
    ("lang", "shown"),
    [
        ("en", "3\xa0days, 2\xa0hours"),
        ("ru", "3\xa0дня, 2\xa0часа"),
        ("kk", "3\xa0күн, 2\xa0сағат"),
    ],
)
def test_durations_read_in_the_language(lang, shown):
    # The queue's "waiting for" and a fill's deadline use Django's timesince, whose Kazakh
    # catalogue lacks the durations: Alem's supplies them (alem/framework_strings.py).
    now = timezone.now()

    with translation.override(lang):
        assert timesince(now - dt.timedelta(days=3, hours=2), now) == shown
