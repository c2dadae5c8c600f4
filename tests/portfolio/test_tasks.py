"""The fetch task, the schedules it runs on, and the Celery settings that make it reliable."""

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from alem.celery import app
from governance.schedules import SCHEDULES, schedules_install
from portfolio.models import Price, PriceFetch
from portfolio.tasks import prices_fetch
from tests.factories import AssetFactory
from tests.portfolio import fake_market

market = fake_market.market  # the fake market fixture

BASE_DIR = Path(django_settings.BASE_DIR)


@pytest.mark.django_db
def test_the_fetch_task_stores_the_providers_prices(market):
    AssetFactory(symbol="BNB", binance_symbol="BNBUSDT")
    market.binance["BNBUSDT"] = "612.34000000"

    result = prices_fetch.apply(args=["binance"]).get()

    assert result["outcome"] == "ok"
    assert result["prices"] == [["BNB", "612.3400000000", "USDT"]]
    assert Price.objects.get().price == Decimal("612.34")


@pytest.mark.django_db
def test_the_fetch_task_does_nothing_while_the_same_fetch_runs(market):
    AssetFactory(symbol="BNB", binance_symbol="BNBUSDT")
    market.binance["BNBUSDT"] = "612.34000000"
    PriceFetch.objects.create(provider="binance", kind="latest", started_at=timezone.now())

    result = prices_fetch.apply(args=["binance"]).get()

    assert result["outcome"] == "busy"
    assert market.requests == []
    assert Price.objects.count() == 0
    assert PriceFetch.objects.count() == 1


@pytest.mark.django_db
def test_schedules_are_installed_once_and_keep_what_an_administrator_changed():
    first = schedules_install()
    binance = PeriodicTask.objects.get(name="Fetch prices from Binance")
    binance.interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    binance.save()

    again = schedules_install()

    assert [what for _, what in first] == ["created"] * len(SCHEDULES)
    assert [what for _, what in again] == ["kept"] * len(SCHEDULES)
    rows = {
        task.name: (
            task.task,
            json.loads(task.args),
            *(
                (task.interval.every, task.interval.period)
                if task.interval
                else (f"{task.crontab.minute} {task.crontab.hour}", str(task.crontab.timezone))
            ),
        )
        for task in PeriodicTask.objects.all()
    }
    assert rows == {
        "Fetch prices from Binance": ("portfolio.tasks.prices_fetch", ["binance"], 5, "minutes"),
        "Fetch prices from CoinGecko": (
            "portfolio.tasks.prices_fetch",
            ["coingecko"],
            120,
            "seconds",
        ),
        "Fetch the official USD/KZT rate": (
            "portfolio.tasks.prices_fetch",
            ["nbk"],
            3600,
            "seconds",
        ),
        "Expire approvals past their execution window": (
            "governance.tasks.proposals_expire",
            [],
            300,
            "seconds",
        ),
        "Take NAV snapshots": ("portfolio.tasks.nav_snapshots_take", [], 3600, "seconds"),
        "Refresh the public disclosures": (
            "portfolio.tasks.public_disclosures_refresh",
            [],
            900,
            "seconds",
        ),
        "Reconcile custody accounts on chain": (
            "portfolio.tasks.reconciliation_run",
            [],
            3600,
            "seconds",
        ),
        "Apply confirmed back-office changes after their cooling-off": (
            "governance.tasks.admin_changes_apply",
            [],
            60,
            "seconds",
        ),
        "Send the tasks waiting in the outbox": (
            "governance.tasks.outbox_relay",
            [],
            60,
            "seconds",
        ),
        "Anchor audit checkpoints on chain": (
            "governance.tasks.checkpoint_anchors_run",
            [],
            300,
            "seconds",
        ),
        "E-mail the daily digest of what waits": (
            "governance.tasks.decision_digest_send",
            [],
            "0 8",
            "Asia/Almaty",
        ),
        "Verify the audit chain": ("governance.tasks.audit_chain_verify", [], 3600, "seconds"),
        "Sign a checkpoint of the audit chain": (
            "governance.tasks.audit_checkpoint_sign",
            [],
            3600,
            "seconds",
        ),
    }


@pytest.mark.django_db
def test_reset_puts_a_schedule_back_to_its_declaration():
    schedules_install()
    PeriodicTask.objects.filter(name="Fetch prices from Binance").update(enabled=False)

    result = schedules_install(reset=True)

    assert [what for _, what in result] == ["reset"] * len(SCHEDULES)
    binance = PeriodicTask.objects.get(name="Fetch prices from Binance")
    assert binance.enabled
    assert (binance.interval.every, binance.interval.period) == (60, "seconds")


def test_every_scheduled_task_exists():
    app.loader.import_default_modules()  # what a worker does at start: autodiscover tasks

    assert {schedule.task for schedule in SCHEDULES} <= set(app.tasks)


def test_celery_acknowledges_late_takes_one_task_at_a_time_and_speaks_json_only():
    conf = app.conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


def celery_conf(env: dict) -> dict:
    """The Celery configuration a fresh process gets from ``env`` (settings read at import)."""
    code = (
        "import json; from alem.celery import app; c = app.conf; "
        "print(json.dumps({'broker': c.broker_url, 'options': c.broker_transport_options, "
        "'time_limit': c.task_time_limit}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_on_redis_the_visibility_timeout_outlasts_every_task_and_wait():
    conf = celery_conf({"REDIS_URL": "redis://127.0.0.1:6379/5"})

    assert conf["broker"] == "redis://127.0.0.1:6379/5"
    visibility = conf["options"]["visibility_timeout"]
    assert visibility == 3600
    assert visibility > conf["time_limit"]
    assert visibility > prices_fetch.time_limit
    assert visibility > django_settings.ALEM_PRICE_BACKOFF_MAX_SECONDS * 10


def test_without_redis_the_filesystem_broker_lives_under_var_and_its_folders_exist(tmp_path):
    conf = celery_conf({"REDIS_URL": "", "ALEM_VAR_DIR": str(tmp_path)})

    assert conf["broker"] == "filesystem://"
    assert conf["options"]["data_folder_in"] == str(tmp_path / "celery-broker" / "queue")
    assert conf["options"]["data_folder_out"] == conf["options"]["data_folder_in"]
    assert conf["options"]["control_folder"] == str(tmp_path / "celery-broker" / "control")
    # The transport never creates its folders; alem.celery does, once configured.
    assert sorted(p.name for p in (tmp_path / "celery-broker").iterdir()) == [
        "control",
        "processed",
        "queue",
    ]


def test_the_fetch_task_finishes_well_inside_its_lease():
    lease = dt.timedelta(seconds=django_settings.ALEM_PRICE_FETCH_LEASE_SECONDS)

    assert dt.timedelta(seconds=prices_fetch.time_limit) < lease
    assert prices_fetch.soft_time_limit < prices_fetch.time_limit
