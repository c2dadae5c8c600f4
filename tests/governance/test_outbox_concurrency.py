"""Relays racing on PostgreSQL send each waiting task once (``governance.outbox``).

Real threads, each with its own connection, run the relay at the same moment; the rows are
shared out by ``SELECT … FOR UPDATE SKIP LOCKED``, so no row is published twice and none is
left behind.
"""

import datetime as dt
import threading
import time
from collections import Counter
from functools import partial

import pytest
from django.utils import timezone

from governance import outbox, tasks
from governance.models import TaskOutbox
from tests.threads import run_together

pytestmark = pytest.mark.django_db(transaction=True)

NOTIFY = "governance.tasks.stage_opened_notify"


@pytest.fixture
def published(monkeypatch):
    """What the broker accepted, by the task's first argument; each publish takes a moment, so
    the racers overlap."""
    accepted = []
    lock = threading.Lock()

    def apply_async(args=None, kwargs=None, **options):
        time.sleep(0.005)
        with lock:
            accepted.append(args[0])

    monkeypatch.setattr(tasks.stage_opened_notify, "apply_async", apply_async)
    return accepted


def waiting_rows(count: int) -> list[int]:
    start = timezone.now() - dt.timedelta(minutes=5)
    rows = TaskOutbox.objects.bulk_create(
        TaskOutbox(
            task=NOTIFY,
            args=[i, 1, 1],
            created_at=start + dt.timedelta(milliseconds=i),
            available_at=start + dt.timedelta(milliseconds=i),
        )
        for i in range(count)
    )
    return [row.args[0] for row in rows]


def test_relays_racing_send_each_row_once(published):
    expected = waiting_rows(60)

    results = run_together([partial(outbox.outbox_relay, batch=7) for _ in range(4)])

    assert [status for status, _ in results] == ["ok"] * 4
    assert sum(report.sent for _, report in results) == 60
    assert Counter(published) == Counter(expected)  # every row, once
    assert TaskOutbox.objects.filter(sent_at__isnull=True).count() == 0
    assert set(TaskOutbox.objects.values_list("attempts", flat=True)) == {1}


def test_the_after_commit_send_racing_a_relay_sends_the_row_once(published):
    for _ in range(10):
        TaskOutbox.objects.all().delete()
        published.clear()
        (number,) = waiting_rows(1)
        row = TaskOutbox.objects.get()

        results = run_together([partial(outbox.outbox_send, row.pk), outbox.outbox_relay])

        assert [status for status, _ in results] == ["ok", "ok"]
        assert published == [number]
        row.refresh_from_db()
        assert (row.sent_at is not None, row.attempts) == (True, 1)
