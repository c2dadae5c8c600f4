"""Backups that restore (``manage.py backup`` and ``manage.py restore_drill``, ``alem.backups``).

pg_dump sees only committed rows, so the PostgreSQL tests commit (``transaction=True``) and
build their own fund: USD 25M contributed, then 500 BNB bought at USD 600 with a USD 30 fee
through a fully approved proposal, and the day's NAV snapshot taken. BNB is priced at USD 600
(Binance) and USD 600.01 (CoinGecko): a consensus of USD 600.005.
"""

import json
import os
import threading
from decimal import Decimal

import pytest
from django.core.management.base import CommandError
from django.db import connection, connections
from django.utils import timezone

from alem import backups
from governance import services
from governance.models import AuditEvent
from governance.vocabulary import AuditAction
from portfolio.models import LedgerEntry, NavSnapshot
from portfolio.selectors import fund_cash_usd
from portfolio.services import nav_snapshot_take
from tests.commands import run_command
from tests.factories import FundBuilder, otp_code
from tests.tampering import superuser_sql

D = Decimal
LEDGER_ROWS = 4  # the contribution; the purchase's BNB, its cash and its fee


@pytest.fixture(autouse=True)
def own_scratch_prefix(monkeypatch):
    """This test process's drills get names of their own, so a drill another xdist worker keeps
    for a moment is not taken for one of ours left behind."""
    monkeypatch.setattr(backups, "SCRATCH_PREFIX", f"{backups.SCRATCH_PREFIX}{os.getpid()}_")


def seeded_fund() -> FundBuilder:
    alem = FundBuilder.alem_like()
    proposal = alem.approve_fully(alem.proposal(submit=True))
    treasury = alem.users["treasury"]
    services.execution_record(
        proposal_id=proposal.pk,
        actor=treasury,
        quantity=D("500"),
        price_usd=D("600"),
        fee_usd=D("30"),
        venue="Binance",
        external_ref="order-1",
        executed_at=timezone.now(),
        otp_token=otp_code(treasury),
    )
    nav_snapshot_take(fund=alem.fund, day=timezone.localdate())
    return alem


def scratch_databases() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [backups.SCRATCH_PREFIX + "%"],
        )
        return [row[0] for row in cursor.fetchall()]


def edit_manifest(dump, change) -> None:
    path = backups.manifest_path_for(dump)
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.fixture
def backed_up(tmp_path):
    """The seeded fund, backed up to ``tmp_path / "alem.dump"``."""
    seeded_fund()
    dump = tmp_path / "alem.dump"
    run_command("backup", "--output", str(dump))
    return dump


# ---------------------------------------------------------------------------------------------
# Backup
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_backup_of_the_seeded_fund_restores_whole(tmp_path):
    alem = seeded_fund()
    dump = tmp_path / "alem.dump"

    printed = run_command("backup", "--output", str(dump))
    drilled = run_command("restore_drill", str(dump))

    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert f"Backup written: {dump} ({dump.stat().st_size:,} bytes)" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alem.dump", "alem.manifest.json"]
    manifest = json.loads(backups.manifest_path_for(dump).read_text())
    assert manifest["dump"] == {"name": "alem.dump", "sha256": backups.sha256_of(dump)}
    assert manifest["funds"] == {
        alem.fund.slug: {
            "cash_usd": "24699970",  # 25M - 500 x 600 - 30 fee
            "positions": {"BNB": {"quantity": "500", "cost_usd": "300000"}},
            "nav_usd": "24999972.5",  # cash + 500 x 600.005
            "latest_nav_snapshot": {
                "date": timezone.localdate().isoformat(),
                "nav_usd": "24999972.5",
            },
        }
    }
    events = AuditEvent.objects.count()
    assert manifest["counts"]["portfolio.LedgerEntry"] == LedgerEntry.objects.count() == LEDGER_ROWS
    assert manifest["counts"]["governance.AuditEvent"] == manifest["audit"]["length"] == events
    assert drilled.startswith(f"Restore drill passed: {dump} restored whole; ")
    assert f"audit chain intact ({events} events)" in drilled
    assert scratch_databases() == []


@pytest.mark.django_db(transaction=True)
def test_manifest_and_dump_share_one_snapshot_while_the_fund_keeps_writing(tmp_path, monkeypatch):
    """A contribution committed by another connection after the snapshot is exported, while
    pg_dump is starting, is in neither the dump nor the manifest; the live books have it."""
    alem = seeded_fund()
    real_run = backups._run

    def run_after_a_concurrent_contribution(command, env, what):
        def contribute():
            services.opening_balance_record(
                fund=alem.fund,
                funding_source=alem.funding_source,
                amount_usd=D("1000000.00"),
            )
            connections.close_all()

        writer = threading.Thread(target=contribute)
        writer.start()
        writer.join()
        real_run(command, env, what)

    monkeypatch.setattr(backups, "_run", run_after_a_concurrent_contribution)
    dump = tmp_path / "alem.dump"
    run_command("backup", "--output", str(dump))
    monkeypatch.undo()

    manifest = json.loads(backups.manifest_path_for(dump).read_text())
    assert manifest["funds"][alem.fund.slug]["cash_usd"] == "24699970"
    assert fund_cash_usd(alem.fund) == D("25699970")
    assert LedgerEntry.objects.count() == manifest["counts"]["portfolio.LedgerEntry"] + 1
    assert "Restore drill passed" in run_command("restore_drill", str(dump))


@pytest.mark.django_db(transaction=True)
def test_backup_shows_pg_dumps_error_and_leaves_no_file(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump: error: server version mismatch' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(CommandError) as refused:
        run_command("backup", "--output", str(out / "alem.dump"))

    assert str(refused.value) == (
        "pg_dump failed (exit 1): pg_dump: error: server version mismatch"
    )
    assert list(out.iterdir()) == []


@pytest.mark.django_db
def test_backup_refuses_when_pg_dump_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(CommandError, match="pg_dump is not installed or not on PATH"):
        run_command("backup", "--output", str(tmp_path / "alem.dump"))

    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Restore drill
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_drill_names_a_count_that_differs_from_the_manifest(backed_up):
    entries = LedgerEntry.objects.count()
    edit_manifest(backed_up, lambda m: m["counts"].update({"portfolio.LedgerEntry": entries + 1}))

    with pytest.raises(CommandError) as failed:
        run_command("restore_drill", str(backed_up))

    assert (
        f"counts/portfolio.LedgerEntry: {entries + 1} in the manifest, {entries} restored"
        in str(failed.value)
    )
    assert str(failed.value).startswith("Restore drill failed: 1 difference(s) between")
    assert scratch_databases() == []


@pytest.mark.django_db(transaction=True)
def test_drill_names_a_ledger_row_altered_in_the_restored_copy_and_keeps_it(backed_up):
    def shrink_the_purchase():
        # The restored copy keeps the append-only triggers; the tamperer lifts them.
        with superuser_sql():
            LedgerEntry.objects.filter(kind=LedgerEntry.Kind.BUY, asset__isnull=False).update(
                quantity=D("400")
            )

    purchase = LedgerEntry.objects.get(kind=LedgerEntry.Kind.BUY, asset__isnull=False).pk
    recorded_by = AuditEvent.objects.get(action=AuditAction.EXECUTION_RECORDED).sequence

    result = backups.restore_drill(dump=backed_up, keep=True, before_check=shrink_the_purchase)
    try:
        kept = scratch_databases()
        with backups.default_database(result.database):
            kept_quantities = sorted(
                LedgerEntry.objects.filter(asset__isnull=False).values_list("quantity", flat=True)
            )
    finally:
        backups._drop_database(result.database)

    slug = NavSnapshot.objects.get().fund.slug
    assert not result.ok
    assert result.differences[0] == (
        f"verify_audit fails on the restored copy: ledger entry {purchase} differs from event "
        f"#{recorded_by}: quantity is '400', recorded '500' (and 1 more)"
    )
    assert f'funds/{slug}/positions/BNB/quantity: "500" in the manifest, "400" restored' in (
        result.differences
    )
    assert f'funds/{slug}/nav_usd: "24999972.5" in the manifest, "24939972" restored' in (
        result.differences
    )
    assert (kept, kept_quantities) == ([result.database], [D("400")])
    assert LedgerEntry.objects.filter(quantity=D("500")).count() == 1  # the live row untouched


# A drill refuses a dump that does not match its manifest before it creates any database.


def fake_dump(tmp_path, sha256: str | None = None):
    dump = tmp_path / "alem.dump"
    dump.write_bytes(b"PGDMP not really")
    manifest = {
        "format": backups.MANIFEST_FORMAT,
        "snapshot_at": timezone.now().isoformat(),
        "dump": {"name": dump.name, "sha256": sha256},
        "counts": {},
        "audit": {},
        "funds": {},
    }
    backups.manifest_path_for(dump).write_text(json.dumps(manifest))
    return dump


@pytest.mark.django_db
def test_drill_refuses_a_dump_changed_since_its_manifest(tmp_path):
    dump = fake_dump(tmp_path, sha256="0" * 64)

    with pytest.raises(CommandError, match="The dump's SHA-256 is not the manifest's"):
        run_command("restore_drill", str(dump))

    assert scratch_databases() == []


@pytest.mark.django_db
def test_drill_refuses_a_dump_without_its_manifest(tmp_path):
    dump = fake_dump(tmp_path)
    backups.manifest_path_for(dump).unlink()

    with pytest.raises(CommandError, match=r"No manifest at .*alem\.manifest\.json"):
        run_command("restore_drill", str(dump))

    assert scratch_databases() == []
