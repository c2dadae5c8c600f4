"""E-mail to the people a proposal waits for: when a stage opens, and in the daily digest."""

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from alem.celery import app
from governance import notifications, services, tasks
from governance.models import Proposal
from governance.preferences import language_of, language_preference_set
from governance.schedules import SCHEDULES, schedules_install
from portfolio.models import FundRole
from tests.factories import UserFactory

SITE = "https://alem.example.kz"


@pytest.fixture(autouse=True)
def site(settings):
    settings.ALEM_SITE_URL = SITE
    settings.LANGUAGE_CODE = "en"
    settings.DEFAULT_FROM_EMAIL = "Alem <no-reply@alem.example>"


def recipients(outbox) -> list[str]:
    return sorted(address for message in outbox for address in message.to)


def linked_proposals(body: str) -> list[int]:
    return [int(pk) for pk in re.findall(rf"{re.escape(SITE)}/proposals/(\d+)/", body)]


def grant(alem, user, role):
    services.role_grant(user=user, fund=alem.fund, role=role)


# ---------------------------------------------------------------------------------------------
# A stage opens
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("eager")
def test_submission_emails_the_risk_officers_only(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    # Given the author also holds the risk role, and committee members are about
    grant(alem, alem.users["manager"], FundRole.REVIEW_RISK)

    with django_capture_on_commit_callbacks(execute=True):
        proposal = alem.proposal(submit=True)

    assert recipients(mailoutbox) == ["risk@alem.example"]
    message = mailoutbox[0]
    assert message.subject == (
        "[Alem] Your decision is needed: BNB USD 500,000.00 — Alem Crypto Fund"
    )
    assert message.from_email == "Alem <no-reply@alem.example>"
    assert message.alternatives == []
    lines = message.body.splitlines()
    assert lines[:13] == [
        "Dear risk,",
        "",
        'A proposal of Alem Crypto Fund now waits for your decision at the stage "Risk review".',
        "",
        "Fund: Alem Crypto Fund",
        "Asset: BNB (BNB)",
        "Notional (maximum spend, fees included): USD 500,000.00",
        "Limit price: USD 650",
        "Stage: 1 of 2, Risk review",
        "Author: manager",
        "Version: 1",
        "",
        "It waits at this stage until 1 decider approves it, or until a decider rejects it or "
        "requests changes.",
    ]
    assert f"{SITE}/proposals/{proposal.pk}/" in lines
    assert linked_proposals(message.body) == [proposal.pk]


@pytest.mark.usefixtures("eager")
def test_every_active_holder_of_the_stage_role_with_an_address_is_emailed(
    alem, mailoutbox, django_capture_on_commit_callbacks, caplog
):
    # Given a second risk officer, one without an address, one inactive, and a superuser
    for username, values in [
        ("risk2", {}),
        ("risk_no_address", {"email": ""}),
        ("risk_gone", {"is_active": False}),
    ]:
        grant(alem, UserFactory(username=username, **values), FundRole.REVIEW_RISK)
    UserFactory(username="root", is_superuser=True)

    with django_capture_on_commit_callbacks(execute=True):
        alem.proposal(submit=True)

    assert recipients(mailoutbox) == ["risk2@alem.example", "risk@alem.example"]
    assert "risk_no_address" in caplog.text
    assert "has no e-mail address" in caplog.text


@pytest.mark.usefixtures("eager")
def test_completing_the_risk_stage_emails_the_committee_members(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = alem.proposal(submit=True)

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "risk")

    assert recipients(mailoutbox) == [
        "committee1@alem.example",
        "committee2@alem.example",
        "committee3@alem.example",
    ]
    assert "Stage: 2 of 2, Investment committee" in mailoutbox[0].body
    assert (
        "It waits at this stage until 2 deciders approve it, or until a decider rejects it or "
        "requests changes." in mailoutbox[0].body
    )


@pytest.mark.usefixtures("eager")
def test_a_large_proposal_reaches_the_ministry_after_the_committee_quorum(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = alem.proposal(submit=True, notional_usd=Decimal("1500000.00"))
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "committee2")

    assert recipients(mailoutbox) == ["ministry@alem.example"]
    assert mailoutbox[0].subject == (
        "[Alem] Your decision is needed: BNB USD 1,500,000.00 — Alem Crypto Fund"
    )
    assert "Stage: 3 of 3, Ministry sign-off" in mailoutbox[0].body


@pytest.mark.usefixtures("eager")
def test_someone_who_decided_on_this_version_is_not_emailed_when_the_next_stage_opens(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    # Given committee1 also reviews risk and approved the risk stage of this version
    grant(alem, alem.users["committee1"], FundRole.REVIEW_RISK)
    proposal = alem.proposal(submit=True)

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "committee1")

    assert recipients(mailoutbox) == ["committee2@alem.example", "committee3@alem.example"]


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize(
    ("decider", "verdict", "state"),
    [
        ("risk", "reject", "rejected"),
        ("risk", "request_changes", "changes_requested"),
        ("committee1", "approve", "in_review"),  # 1 of 2: the stage stays open
        ("committee2", "approve", "approved"),  # the last stage completes
    ],
)
def test_decisions_that_open_no_stage_send_no_email(
    alem, mailoutbox, django_capture_on_commit_callbacks, decider, verdict, state
):
    proposal = alem.proposal(submit=True)
    if decider.startswith("committee"):
        alem.decide(proposal, "risk")
    if decider == "committee2":
        alem.decide(proposal, "committee1")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        alem.decide(proposal, decider, verdict)

    proposal.refresh_from_db()
    assert proposal.state == state
    assert callbacks == []
    assert mailoutbox == []


@pytest.mark.usefixtures("eager")
def test_resubmission_emails_the_first_stage_again_for_the_new_version(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk", "request_changes")

    with django_capture_on_commit_callbacks(execute=True):
        services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])

    assert recipients(mailoutbox) == ["risk@alem.example"]
    assert "Version: 2" in mailoutbox[0].body.splitlines()


@pytest.mark.usefixtures("eager")
def test_a_rolled_back_submission_sends_nothing(
    alem, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = alem.proposal()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])
        raise RuntimeError("something after the submission failed")

    assert callbacks == []
    assert mailoutbox == []
    proposal.refresh_from_db()
    assert proposal.state == "draft"


def test_the_hook_queues_the_task_with_the_stage_that_opened(
    alem, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(tasks.stage_opened_notify, "delay", lambda *args: queued.append(args))
    proposal = alem.proposal(submit=True)

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "risk")

    assert queued == [(proposal.pk, 1, 2)]


def test_a_broker_that_is_down_does_not_fail_the_committed_decision(
    alem, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def broker_down(*args):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.stage_opened_notify, "delay", broker_down)
    proposal = alem.proposal(submit=True)

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "risk")

    proposal.refresh_from_db()
    assert proposal.current_stage.order == 2
    assert "broker down" in caplog.text


# ---------------------------------------------------------------------------------------------
# The task when the proposal moved on
# ---------------------------------------------------------------------------------------------


def moved_to_next_stage(alem, proposal):
    alem.decide(proposal, "risk")


def withdrawn(alem, proposal):
    services.proposal_withdraw(proposal_id=proposal.pk, actor=alem.users["manager"])


def resubmitted(alem, proposal):
    alem.decide(proposal, "risk", "request_changes")
    services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])


@pytest.mark.parametrize("move_on", [moved_to_next_stage, withdrawn, resubmitted])
def test_the_task_sends_nothing_when_the_proposal_moved_on(alem, mailoutbox, move_on):
    proposal = alem.proposal(submit=True)
    move_on(alem, proposal)

    sent = tasks.stage_opened_notify.apply(args=(proposal.pk, 1, 1)).get()

    assert sent == 0
    assert mailoutbox == []


def test_the_task_sends_nothing_for_a_proposal_that_does_not_exist(db, mailoutbox):
    assert tasks.stage_opened_notify.apply(args=(999_999, 1, 1)).get() == 0
    assert mailoutbox == []


def test_the_task_emails_the_current_deciders_when_the_stage_still_waits(alem, mailoutbox):
    proposal = alem.proposal(submit=True)

    sent = tasks.stage_opened_notify.apply(args=(proposal.pk, 1, 1)).get()

    assert sent == 1
    assert recipients(mailoutbox) == ["risk@alem.example"]


class RefusesOnceBackend(EmailBackend):
    """The in-memory outbox, with a mail server that refuses committee2's address once."""

    refused: set = set()

    def send_messages(self, messages):
        for message in messages:
            if "committee2@alem.example" in message.to and "committee2" not in self.refused:
                self.refused.add("committee2")
                raise ConnectionResetError("the server hung up")
        return super().send_messages(messages)


@pytest.fixture
def refuses_once(settings):
    settings.EMAIL_BACKEND = f"{__name__}.RefusesOnceBackend"
    RefusesOnceBackend.refused = set()


@pytest.mark.usefixtures("refuses_once")
def test_a_refused_address_is_reported_and_the_others_still_sent(alem, mailoutbox):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")

    delivery = notifications.notify_stage_opened(proposal.pk, 1, 2)

    committee = [alem.users[name].pk for name in ("committee1", "committee2", "committee3")]
    assert delivery == notifications.Delivery(
        sent=(committee[0], committee[2]), failed=(committee[1],)
    )
    assert recipients(mailoutbox) == ["committee1@alem.example", "committee3@alem.example"]


@pytest.mark.usefixtures("refuses_once")
def test_the_task_retries_only_the_refused_address(alem, mailoutbox):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")

    # Run locally, a retry runs at once (a worker would wait default_retry_delay).
    result = tasks.stage_opened_notify.apply(args=(proposal.pk, 1, 2), throw=False)

    assert result.get() == 1  # the retry reached committee2 alone
    assert recipients(mailoutbox) == [
        "committee1@alem.example",
        "committee2@alem.example",
        "committee3@alem.example",
    ]


def test_the_email_is_in_the_site_language_whatever_language_is_active(alem, mailoutbox):
    proposal = alem.proposal(submit=True)

    with translation.override("ru"):
        notifications.notify_stage_opened(proposal.pk, 1, 1)

    assert mailoutbox[0].subject == (
        "[Alem] Your decision is needed: BNB USD 500,000.00 — Alem Crypto Fund"
    )


def test_each_decider_is_written_to_in_the_language_they_chose(alem, mailoutbox):
    # Given committee1 chose Kazakh, committee2 Russian, and committee3 never chose
    language_preference_set(user=alem.users["committee1"], language="kk")
    language_preference_set(user=alem.users["committee2"], language="ru")
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")

    # When the committee's stage opens
    notifications.notify_stage_opened(proposal.pk, 1, 2)

    # Then each reads it in their language, numbers and dates included
    subjects = {message.to[0]: message.subject for message in mailoutbox}
    assert subjects == {
        "committee1@alem.example": (
            "[Alem] Сіздің шешіміңіз қажет: BNB USD 500\xa0000,00 — Alem Crypto Fund"
        ),
        "committee2@alem.example": (
            "[Alem] Нужно ваше решение: BNB USD 500\xa0000,00 — Alem Crypto Fund"
        ),
        "committee3@alem.example": (
            "[Alem] Your decision is needed: BNB USD 500,000.00 — Alem Crypto Fund"
        ),
    }


# ---------------------------------------------------------------------------------------------
# The daily digest
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def waiting(alem):
    """At risk review: ``at_risk``; at the committee with committee1's approval: ``at_committee``;
    approved: ``approved`` (to execute) and ``lapsed`` (past its window, not yet expired by the
    task); a draft that waits for nobody."""
    at_risk = alem.proposal(submit=True)
    at_committee = alem.proposal(submit=True, notional_usd=Decimal("400000.00"))
    alem.decide(at_committee, "risk")
    alem.decide(at_committee, "committee1")
    approved = alem.approve_fully(alem.proposal(submit=True, notional_usd=Decimal("300000.00")))
    lapsed = alem.approve_fully(alem.proposal(submit=True, notional_usd=Decimal("200000.00")))
    Proposal.objects.filter(pk=lapsed.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    alem.proposal()
    return {"at_risk": at_risk, "at_committee": at_committee, "approved": approved}


def test_the_digest_lists_for_each_person_exactly_what_waits_for_them(alem, waiting, mailoutbox):
    delivery = notifications.digest_send()

    by_recipient = {message.to[0]: message for message in mailoutbox}
    assert {address: linked_proposals(m.body) for address, m in by_recipient.items()} == {
        "risk@alem.example": [waiting["at_risk"].pk],
        "committee2@alem.example": [waiting["at_committee"].pk],
        "committee3@alem.example": [waiting["at_committee"].pk],
        "treasury@alem.example": [waiting["approved"].pk],
    }
    assert len(mailoutbox) == 4
    assert sorted(delivery.sent) == sorted(
        alem.users[name].pk for name in ("risk", "committee2", "committee3", "treasury")
    )
    assert delivery.failed == ()


def test_the_digest_says_what_each_item_is(alem, waiting, mailoutbox):
    notifications.digest_send()

    by_recipient = {message.to[0]: message for message in mailoutbox}
    committee = by_recipient["committee2@alem.example"]
    assert committee.subject == "[Alem] 1 proposal waits for you"
    assert "Waiting for your decision (1):" in committee.body
    assert (
        '- Alem Crypto Fund: BNB USD 400,000.00, at the stage "Investment committee", '
        "proposed by manager, in review since " in committee.body
    )
    assert "Approved and waiting for fills" not in committee.body
    treasury = by_recipient["treasury@alem.example"]
    assert "Approved and waiting for fills (1):" in treasury.body
    assert (
        "- Alem Crypto Fund: BNB, USD 300,000.00 of USD 300,000.00 left to execute; "
        "the approval expires on " in treasury.body
    )
    assert "Waiting for your decision" not in treasury.body
    assert f"Your queue: {SITE}/" in treasury.body


def test_a_person_with_several_items_gets_one_digest_listing_them_all(alem, mailoutbox):
    first = alem.proposal(submit=True)
    second = alem.proposal(submit=True, notional_usd=Decimal("100000.00"))

    notifications.digest_send()

    assert recipients(mailoutbox) == ["risk@alem.example"]
    assert mailoutbox[0].subject == "[Alem] 2 proposals wait for you"
    assert linked_proposals(mailoutbox[0].body) == [first.pk, second.pk]


def test_the_digest_sends_nothing_when_nothing_waits(alem, mailoutbox):
    alem.proposal()  # a draft waits for its author only

    delivery = notifications.digest_send()

    assert delivery == notifications.Delivery()
    assert mailoutbox == []


def test_the_digest_skips_people_without_an_address(alem, mailoutbox, caplog):
    alem.users["risk"].email = ""
    alem.users["risk"].save(update_fields=["email"])
    alem.proposal(submit=True)

    delivery = notifications.digest_send()

    assert delivery == notifications.Delivery()
    assert mailoutbox == []
    assert "risk (#" in caplog.text


def test_the_digest_task_sends_the_digest(alem, mailoutbox):
    alem.proposal(submit=True)

    assert tasks.decision_digest_send.apply().get() == 1
    assert recipients(mailoutbox) == ["risk@alem.example"]


def test_the_digest_reads_as_many_queries_for_twelve_waiting_proposals_as_for_one(
    alem, django_assert_num_queries, mailoutbox
):
    alem.proposal(submit=True, notional_usd=Decimal("10000.00"))
    with CaptureQueriesContext(connection) as one:
        notifications.digest_waiting()
    for _ in range(11):
        alem.proposal(submit=True, notional_usd=Decimal("10000.00"))

    with django_assert_num_queries(len(one.captured_queries)):
        entries = notifications.digest_waiting()

    assert [(entry.user.username, len(entry.decisions)) for entry in entries] == [("risk", 12)]


def test_the_digest_is_in_each_persons_language_read_with_them(
    alem, mailoutbox, django_assert_num_queries
):
    language_preference_set(user=alem.users["risk"], language="ru")
    alem.proposal(submit=True)

    (entry,) = notifications.digest_waiting()
    with django_assert_num_queries(0):
        assert language_of(entry.user) == "ru"
    notifications.digest_send()

    (message,) = mailoutbox
    assert message.subject == "[Alem] Вас ожидает 1 предложение"


# ---------------------------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------------------------


def test_the_digest_is_scheduled_daily_at_eight_almaty_time(db):
    (schedule,) = [s for s in SCHEDULES if s.task == "governance.tasks.decision_digest_send"]

    schedules_install()

    task = PeriodicTask.objects.get(name=schedule.name)
    assert task.interval is None
    assert json.loads(task.args) == []
    assert (
        task.crontab.minute,
        task.crontab.hour,
        task.crontab.day_of_week,
        task.crontab.day_of_month,
        task.crontab.month_of_year,
        str(task.crontab.timezone),
    ) == ("0", "8", "*", "*", "*", "Asia/Almaty")
    assert task.enabled


def test_reinstalling_keeps_one_crontab_for_the_digest(db):
    schedules_install()
    schedules_install(reset=True)

    assert PeriodicTask.objects.filter(task="governance.tasks.decision_digest_send").count() == 1
    assert CrontabSchedule.objects.count() == 1


def test_the_notification_tasks_are_registered():
    app.loader.import_default_modules()

    assert {
        "governance.tasks.stage_opened_notify",
        "governance.tasks.decision_digest_send",
    } <= set(app.tasks)
