"""Nothing lost when the broker is down: the tasks a change queues wait in the outbox
(``governance.outbox``), written in the change's transaction, and go out when the broker is back.

The broker is "down" when the task's ``apply_async`` (which ``delay`` calls) raises what kombu
raises when Redis does not answer. The races of two relays are in ``test_outbox_concurrency``.
"""

import datetime as dt

import kombu
import pytest
from django.core.management.base import CommandError
from django.db import transaction
from django.urls import reverse
from kombu.exceptions import OperationalError

from alem.celery import app
from alem.observability import TASK_HEADER, request_id_var
from governance import outbox, services, tasks
from governance.models import AuditVerification, Decision, Proposal, TaskOutbox
from tests.commands import run_command
from tests.web import signed_in

NOTIFY = "governance.tasks.stage_opened_notify"
COMMITTEE = ["committee1@alem.example", "committee2@alem.example", "committee3@alem.example"]
# What kombu says when Redis refuses the connection; the URL's password must not be kept.
REFUSAL = "Error 111 connecting to redis://:s3cret@10.0.0.5:6379/0. Connection refused."


@pytest.fixture(autouse=True)
def site(settings):
    settings.ALEM_SITE_URL = "https://alem.example.kz"
    settings.LANGUAGE_CODE = "en"


class Broker:
    """The e-mail task's broker, switched down and up; records what it accepted."""

    def __init__(self, monkeypatch):
        self.up = True
        self.accepted = []
        self._real = tasks.stage_opened_notify.apply_async
        monkeypatch.setattr(tasks.stage_opened_notify, "apply_async", self.apply_async)

    def apply_async(self, args=None, kwargs=None, **options):
        if not self.up:
            raise OperationalError(REFUSAL)
        self.accepted.append((tuple(args or ()), dict(kwargs or {}), request_id_var.get()))
        return self._real(args, kwargs, **options)  # eager: the e-mails are sent in the test


@pytest.fixture
def broker(monkeypatch, eager):
    return Broker(monkeypatch)


def recipients(mailoutbox) -> list[str]:
    return sorted(address for message in mailoutbox for address in message.to)


def submitted(alem, django_capture_on_commit_callbacks) -> Proposal:
    """A proposal submitted and committed: its e-mail to the risk officers went out."""
    with django_capture_on_commit_callbacks(execute=True):
        return alem.proposal(submit=True)


def risk_approves(alem, proposal, django_capture_on_commit_callbacks):
    """The risk officer's approval, committed: it opens the committee stage."""
    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "risk")


# ---------------------------------------------------------------------------------------------
# The broker is down: the decision stands, its e-mail waits
# ---------------------------------------------------------------------------------------------


def test_a_decision_with_the_broker_down_succeeds_and_its_email_waits_in_the_outbox(
    alem, broker, mailoutbox, django_capture_on_commit_callbacks, caplog
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    TaskOutbox.objects.all().delete()  # the submission's e-mail, sent
    mailoutbox.clear()
    broker.accepted.clear()
    broker.up = False

    risk_approves(alem, proposal, django_capture_on_commit_callbacks)

    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == ("in_review", 2)
    assert Decision.objects.filter(proposal=proposal, user=alem.users["risk"]).count() == 1
    row = TaskOutbox.objects.get()
    assert (row.task, row.args, row.kwargs) == (NOTIFY, [proposal.pk, 1, 2], {})
    assert (row.sent_at, row.attempts) == (None, 1)
    assert row.last_error == (
        "OperationalError: Error 111 connecting to redis://***@10.0.0.5:6379/0. Connection refused."
    )
    # One minute after the attempt, right after the row was written.
    assert dt.timedelta(minutes=1) <= row.available_at - row.created_at < dt.timedelta(seconds=65)
    assert broker.accepted == []
    assert mailoutbox == []
    assert "s3cret" not in caplog.text
    assert f"Task {NOTIFY} (outbox #{row.pk}) could not be queued, attempt 1" in caplog.text


def test_the_relay_sends_the_waiting_email_once_the_broker_is_back_and_marks_it_sent(
    alem, broker, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    TaskOutbox.objects.all().delete()
    mailoutbox.clear()
    broker.accepted.clear()
    broker.up = False
    risk_approves(alem, proposal, django_capture_on_commit_callbacks)
    row = TaskOutbox.objects.get()

    # Before its back-off has passed, the row waits even with the broker back.
    broker.up = True
    assert outbox.outbox_relay(now=row.available_at - dt.timedelta(seconds=1)) == (
        outbox.RelayReport(sent=0, failed=0, pruned=0)
    )
    assert broker.accepted == []

    report = outbox.outbox_relay(now=row.available_at)

    assert report == outbox.RelayReport(sent=1, failed=0, pruned=0)
    assert [args for args, _, _ in broker.accepted] == [(proposal.pk, 1, 2)]
    assert recipients(mailoutbox) == COMMITTEE
    row.refresh_from_db()
    assert (row.sent_at, row.attempts, row.last_error) == (row.available_at, 2, "")
    # A second run sends nothing again.
    assert outbox.outbox_relay(now=row.available_at + dt.timedelta(minutes=5)).sent == 0
    assert len(broker.accepted) == 1


def test_with_the_broker_up_the_email_goes_at_once_and_the_row_is_marked_sent(
    alem, broker, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    mailoutbox.clear()

    risk_approves(alem, proposal, django_capture_on_commit_callbacks)

    assert [args for args, _, _ in broker.accepted][-1] == (proposal.pk, 1, 2)
    assert recipients(mailoutbox) == COMMITTEE
    row = TaskOutbox.objects.get(args=[proposal.pk, 1, 2])
    assert row.sent_at is not None
    assert (row.attempts, row.last_error) == (1, "")
    assert outbox.outbox_waiting() == 0


def test_a_rolled_back_submission_leaves_no_outbox_row(
    alem, broker, django_capture_on_commit_callbacks
):
    proposal = alem.proposal()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])
        assert TaskOutbox.objects.count() == 1  # written with the change…
        raise RuntimeError("something after the submission failed")

    assert TaskOutbox.objects.count() == 0  # …and gone with it
    assert callbacks == []
    assert broker.accepted == []
    proposal.refresh_from_db()
    assert proposal.state == "draft"


def test_a_decision_that_opens_no_stage_queues_nothing(
    alem, broker, django_capture_on_commit_callbacks
):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    before = TaskOutbox.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        alem.decide(proposal, "committee1")

    assert TaskOutbox.objects.count() == before


# ---------------------------------------------------------------------------------------------
# The request id goes with the task, however late
# ---------------------------------------------------------------------------------------------


def test_the_request_id_travels_from_the_row_into_the_published_tasks_headers(
    alem, broker, django_capture_on_commit_callbacks, monkeypatch
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    broker.up = False
    token = request_id_var.set("req-decide-7")
    try:
        risk_approves(alem, proposal, django_capture_on_commit_callbacks)
    finally:
        request_id_var.reset(token)
    row = TaskOutbox.objects.get(sent_at__isnull=True)
    assert row.request_id == "req-decide-7"

    # The relay runs later, outside any request (in the worker, or a cron job), and publishes
    # for real this time: the message is caught on its way out instead of reaching a broker.
    monkeypatch.setattr(tasks.stage_opened_notify, "apply_async", broker._real)
    app.conf.task_always_eager = False  # the eager fixture puts it back
    published = []
    monkeypatch.setattr(
        kombu.Producer,
        "publish",
        lambda producer, body, **options: published.append(options["headers"]),
    )
    assert request_id_var.get() is None

    report = outbox.outbox_relay(now=row.available_at)

    assert report.sent == 1
    assert [(headers["task"], headers[TASK_HEADER]) for headers in published] == [
        (NOTIFY, "req-decide-7")
    ]
    assert request_id_var.get() is None  # the relay forgets it after publishing


def test_a_task_run_in_place_by_the_relay_keeps_the_request_id(
    alem, broker, django_capture_on_commit_callbacks
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    broker.up = False
    token = request_id_var.set("req-decide-8")
    try:
        risk_approves(alem, proposal, django_capture_on_commit_callbacks)
    finally:
        request_id_var.reset(token)
    broker.up = True

    outbox.outbox_relay(now=TaskOutbox.objects.get(sent_at__isnull=True).available_at)

    assert broker.accepted[-1] == ((proposal.pk, 1, 2), {}, "req-decide-8")


# ---------------------------------------------------------------------------------------------
# The relay: oldest first, back-off, pruning
# ---------------------------------------------------------------------------------------------


def waiting_rows(alem, count: int, *, at: dt.datetime) -> list[TaskOutbox]:
    """``count`` unsent e-mail rows, one a second from ``at``, for proposals that moved on (the
    task, run in place, e-mails nobody)."""
    return [
        TaskOutbox.objects.create(
            task=NOTIFY,
            args=[999_000 + i, 1, 1],
            created_at=at + dt.timedelta(seconds=i),
            available_at=at + dt.timedelta(seconds=i),
        )
        for i in range(count)
    ]


def test_the_relay_sends_oldest_first_in_batches(alem, broker):
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    rows = waiting_rows(alem, 5, at=start)

    report = outbox.outbox_relay(now=start + dt.timedelta(minutes=1), batch=2)

    assert report == outbox.RelayReport(sent=5, failed=0, pruned=0)
    assert [args[0] for args, _, _ in broker.accepted] == [row.args[0] for row in rows]
    assert TaskOutbox.objects.filter(sent_at__isnull=True).count() == 0


def test_the_relay_stops_at_the_first_broker_refusal_and_backs_that_row_off(alem, broker):
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    first, *later = waiting_rows(alem, 3, at=start)
    broker.up = False
    now = start + dt.timedelta(minutes=1)

    report = outbox.outbox_relay(now=now)

    assert report == outbox.RelayReport(sent=0, failed=1, pruned=0)
    first.refresh_from_db()
    assert (first.attempts, first.available_at) == (1, now + dt.timedelta(minutes=1))
    # The others were not tried: they go on the next run, not after their own refusal.
    for row in later:
        row.refresh_from_db()
        assert (row.attempts, row.available_at, row.last_error) == (0, row.created_at, "")
    assert outbox.outbox_waiting() == 3


def test_a_refused_row_backs_off_1_2_4_8_minutes_and_then_every_10():
    assert [outbox.backoff(n) for n in range(1, 8)] == [
        dt.timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10, 10)
    ]
    assert outbox.backoff(500) == dt.timedelta(minutes=10)


def test_a_row_whose_task_is_unknown_backs_off_and_the_others_still_go(alem, broker):
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    stale = TaskOutbox.objects.create(
        task="governance.tasks.renamed_long_ago", created_at=start, available_at=start
    )
    (row,) = waiting_rows(alem, 1, at=start + dt.timedelta(seconds=1))

    report = outbox.outbox_relay(now=start + dt.timedelta(minutes=1))

    assert report == outbox.RelayReport(sent=1, failed=1, pruned=0)
    stale.refresh_from_db()
    row.refresh_from_db()
    assert (stale.sent_at, stale.attempts) == (None, 1)
    assert stale.last_error.startswith("NotRegistered: ")
    assert row.sent_at is not None


def test_rows_sent_more_than_a_week_ago_are_pruned_and_unsent_rows_never(alem, broker):
    now = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)
    old = now - dt.timedelta(days=30)
    sent_long_ago, sent_lately, never_sent = (
        TaskOutbox.objects.create(task=NOTIFY, created_at=old, available_at=old, sent_at=sent)
        for sent in (now - dt.timedelta(days=7, seconds=1), now - dt.timedelta(days=6), None)
    )
    broker.up = False

    report = outbox.outbox_relay(now=now)

    assert report.pruned == 1
    assert set(TaskOutbox.objects.values_list("pk", flat=True)) == {
        sent_lately.pk,
        never_sent.pk,
    }
    assert not TaskOutbox.objects.filter(pk=sent_long_ago.pk).exists()


def test_a_late_duplicate_of_a_stage_opened_email_sends_nothing_once_the_proposal_moved_on(
    alem, broker, mailoutbox, django_capture_on_commit_callbacks
):
    proposal = submitted(alem, django_capture_on_commit_callbacks)
    broker.up = False
    risk_approves(alem, proposal, django_capture_on_commit_callbacks)
    alem.decide(proposal, "committee1")
    alem.decide(proposal, "committee2")  # the proposal is approved: nobody waits at stage 2
    mailoutbox.clear()
    broker.up = True

    outbox.outbox_relay(now=TaskOutbox.objects.get(sent_at__isnull=True).available_at)

    assert Proposal.objects.get(pk=proposal.pk).state == "approved"
    assert outbox.outbox_waiting() == 0
    assert mailoutbox == []


# ---------------------------------------------------------------------------------------------
# The task, the command, and "Verify now"
# ---------------------------------------------------------------------------------------------


def test_the_relay_task_sends_what_waits(alem, broker):
    waiting_rows(alem, 2, at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))

    assert tasks.outbox_relay.apply().get() == {"sent": 2, "failed": 0, "pruned": 0}


def test_the_command_sends_what_waits_and_fails_while_the_broker_is_down(alem, broker):
    waiting_rows(alem, 2, at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    broker.up = False

    with pytest.raises(CommandError, match=r"0 task\(s\) sent, 1 not sent.*; 2 waiting"):
        run_command("outbox_relay")

    broker.up = True
    TaskOutbox.objects.update(available_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    assert run_command("outbox_relay").strip() == (
        "Outbox: 2 task(s) sent, 0 not sent, 0 old row(s) pruned; 0 waiting."
    )


def test_verify_now_with_the_broker_down_answers_and_the_verification_waits_in_the_outbox(
    client, alem, eager, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.audit_chain_verify, "apply_async", broker_down)
    signed_in(client, alem.users["auditor"])

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("audit-verify"))

    assert response.status_code == 302
    row = TaskOutbox.objects.get(task="governance.tasks.audit_chain_verify")
    assert (row.kwargs, row.sent_at) == ({"requested_by_id": alem.users["auditor"].pk}, None)
    assert row.request_id == response["X-Request-ID"]
    assert AuditVerification.objects.count() == 0

    monkeypatch.undo()
    outbox.outbox_relay(now=row.available_at)

    verification = AuditVerification.objects.get()
    assert (verification.ok, verification.requested_by) == (True, alem.users["auditor"])
