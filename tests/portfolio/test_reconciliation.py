"""On-chain reconciliation: balances read from an in-process EVM (eth-tester) and a local fake
Esplora server, compared with the ledger; breaks opened, e-mailed, audited and explained."""

import datetime as dt
import socket
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from eth_account import Account

from governance.exceptions import NotPermitted
from governance.models import AuditEvent, TaskOutbox
from portfolio import tasks
from portfolio.exceptions import BreakNotOpen
from portfolio.models import (
    AccountPosition,
    Asset,
    BalanceObservation,
    LedgerEntry,
    ReconciliationBreak,
    ReconciliationRun,
)
from portfolio.reconciliation import rules
from portfolio.reconciliation.services import break_explain, reconciliation_run, statement_record
from tests.factories import AssetFactory
from tests.portfolio.reconciliation_fixtures import (
    FakeEsplora,
    book_coins,
    custody_account,
    evm_test_chain,
    send_on_chain,
)
from tests.web import signed_in

BSC = "BNB Smart Chain"
ONE_BNB = 10**18


@pytest.fixture
def chain(settings, monkeypatch):
    return evm_test_chain(settings, monkeypatch)


@pytest.fixture
def bnb(alem):
    Asset.objects.filter(pk=alem.asset.pk).update(chain=BSC)
    return Asset.objects.get(pk=alem.asset.pk)


@pytest.fixture
def btc(db):
    return AssetFactory(symbol="BTC", name="Bitcoin", chain="Bitcoin")


@pytest.fixture
def cold(alem, bnb):
    """A cold wallet on BNB Smart Chain: a fresh address on the test chain."""
    return custody_account(
        alem.fund, name="Cold multisig 1", chain=BSC, address=Account.create().address
    )


def breaks_of(account):
    return list(ReconciliationBreak.objects.filter(account=account).order_by("pk"))


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


# ---------------------------------------------------------------------------------------------
# The rule (pure)
# ---------------------------------------------------------------------------------------------


def test_a_difference_at_dust_is_no_break_and_one_unit_beyond_is():
    dust = Decimal("0.00000001")
    fresh = {"open_break": False, "explained_difference": None, "matched_since": False}

    assert not rules.opens_break(Decimal("0.00000001"), dust, **fresh)
    assert not rules.opens_break(Decimal("-0.00000001"), dust, **fresh)
    assert rules.opens_break(Decimal("0.00000002"), dust, **fresh)
    assert rules.opens_break(Decimal("-0.00000002"), dust, **fresh)


def test_after_an_explanation_only_a_different_amount_opens_a_new_break():
    dust = Decimal("0.000000001")
    explained = {"open_break": False, "explained_difference": Decimal("2"), "matched_since": False}

    assert not rules.opens_break(Decimal("2.000000001"), dust, **explained)
    assert rules.opens_break(Decimal("2.000000002"), dust, **explained)
    assert rules.opens_break(Decimal("-2"), dust, **explained)
    # once the account matched the ledger again, the same amount is a new difference
    assert rules.opens_break(Decimal("2"), dust, **{**explained, "matched_since": True})
    # while a break is open, nothing else opens
    assert not rules.opens_break(Decimal("5"), dust, **{**explained, "open_break": True})


# ---------------------------------------------------------------------------------------------
# EVM: a real transfer on the in-process chain
# ---------------------------------------------------------------------------------------------


def test_a_real_transfer_booked_in_the_ledger_reconciles_without_a_break(alem, cold, bnb, chain):
    send_on_chain(chain, cold.address, 3 * ONE_BNB // 2)
    book_coins(alem, cold, bnb, "1.5")

    run = reconciliation_run()

    observation = BalanceObservation.objects.get(account=cold)
    assert (observation.observed_quantity, observation.ledger_quantity) == (
        Decimal("1.5"),
        Decimal("1.5"),
    )
    assert observation.difference == 0
    assert observation.source == "chain"
    assert observation.block_number == chain.eth.block_number
    assert (run.observed, run.breaks_opened, run.failures) == (1, 0, [])
    assert breaks_of(cold) == []


def test_coins_arriving_on_chain_beyond_the_ledger_open_a_break_emailed_and_audited(
    alem, cold, bnb, chain, django_capture_on_commit_callbacks
):
    send_on_chain(chain, cold.address, ONE_BNB)
    book_coins(alem, cold, bnb, "1")
    reconciliation_run()
    send_on_chain(chain, cold.address, 250_000_000_000_000_007)  # 0.25 BNB and 7 wei
    entries_before = LedgerEntry.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        run = reconciliation_run()

    (break_,) = breaks_of(cold)
    assert break_.state == "open"
    assert break_.observed_quantity == Decimal("1.250000000000000007")
    assert break_.ledger_quantity == Decimal("1")
    assert break_.difference == Decimal("0.250000000000000007")
    assert run.breaks_opened == 1
    (opened,) = events("reconciliation.break_opened")
    assert opened.fund_id == alem.fund.pk
    assert opened.payload["difference"] == "0.250000000000000007"
    assert opened.payload["reconciliation_break"] == break_.pk
    assert TaskOutbox.objects.filter(
        task="portfolio.tasks.reconciliation_break_notify", args=[break_.pk]
    ).exists()
    assert sorted(to for message in mail.outbox for to in message.to) == [
        "auditor@alem.example",
        "fundadmin2@alem.example",
        "fundadmin@alem.example",
    ]
    assert "0.250000000000000007" in mail.outbox[0].body
    assert f"/funds/{alem.fund.pk}/reconciliation/" in mail.outbox[0].body
    # never corrected: the ledger and the account's position are as they were
    assert LedgerEntry.objects.count() == entries_before
    assert AccountPosition.objects.get(account=cold, asset=bnb).quantity == Decimal("1")


def test_a_break_opens_an_auditor_explains_it_and_it_closes(alem, cold, bnb, chain):
    send_on_chain(chain, cold.address, 2 * ONE_BNB)
    book_coins(alem, cold, bnb, "1")
    reconciliation_run()
    (break_,) = breaks_of(cold)

    reconciliation_run()  # the same difference again: the open break waits, no second one
    assert breaks_of(cold) == [break_]

    explained = break_explain(
        actor=alem.users["auditor"],
        break_id=break_.pk,
        explanation="Custodian's test deposit, to be booked as a contribution.",
    )

    assert explained.state == "explained"
    assert explained.explained_by == alem.users["auditor"]
    (event,) = events("reconciliation.break_explained")
    assert event.actor == alem.users["auditor"]
    assert event.payload["explanation"] == (
        "Custodian's test deposit, to be booked as a contribution."
    )
    assert AccountPosition.objects.get(account=cold, asset=bnb).quantity == Decimal("1")

    reconciliation_run()  # the explained amount again: nothing new
    assert breaks_of(cold) == [explained]

    send_on_chain(chain, cold.address, ONE_BNB // 10)  # another 0.1 BNB: a new amount
    reconciliation_run()
    assert [b.difference for b in breaks_of(cold)] == [Decimal("1"), Decimal("1.1")]
    assert breaks_of(cold)[1].state == "open"

    with pytest.raises(BreakNotOpen):
        break_explain(actor=alem.users["auditor"], break_id=break_.pk, explanation="Again")


def test_only_an_auditor_explains_with_a_comment_and_a_refusal_changes_nothing(
    alem, cold, bnb, chain
):
    send_on_chain(chain, cold.address, ONE_BNB)
    reconciliation_run()
    (break_,) = breaks_of(cold)
    events_before = AuditEvent.objects.count()

    for username in ("fundadmin", "treasury", "manager", "committee1"):
        with pytest.raises(NotPermitted):
            break_explain(actor=alem.users[username], break_id=break_.pk, explanation="Fine.")

    break_.refresh_from_db()
    assert (break_.state, break_.explained_by, break_.explanation) == ("open", None, "")
    assert AuditEvent.objects.count() == events_before


def test_a_fund_administrator_links_a_proposal_of_the_same_fund(alem, cold, bnb, chain):
    send_on_chain(chain, cold.address, ONE_BNB)
    reconciliation_run()
    (break_,) = breaks_of(cold)
    proposal = alem.proposal()

    with pytest.raises(ValidationError):
        break_explain(actor=alem.users["fundadmin"], break_id=break_.pk, proposal_id=10**9)
    explained = break_explain(
        actor=alem.users["fundadmin"], break_id=break_.pk, proposal_id=proposal.pk
    )

    assert (explained.state, explained.proposal, explained.explanation) == (
        "explained",
        proposal,
        "",
    )
    (event,) = events("reconciliation.break_explained")
    assert event.proposal_id == proposal.pk


def test_a_node_that_is_down_is_a_recorded_failure_and_never_a_break(alem, cold, bnb, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.ALEM_RECONCILIATION_RPC_URLS = {BSC: f"http://127.0.0.1:{port}", "Ethereum": ""}
    settings.ALEM_RECONCILIATION_TIMEOUT_SECONDS = 2
    book_coins(alem, cold, bnb, "1")

    run = reconciliation_run()

    (failure,) = run.failures
    assert (failure["account"], failure["asset"]) == (cold.pk, "BNB")
    assert "Connection" in failure["error"] or "refused" in failure["error"]
    assert run.observed == 0
    assert not BalanceObservation.objects.exists()
    assert not ReconciliationBreak.objects.exists()


def test_a_chain_without_a_node_is_reported_skipped_never_silent(alem, cold, bnb, settings):
    settings.ALEM_RECONCILIATION_RPC_URLS = {BSC: "", "Ethereum": ""}
    other = AssetFactory(symbol="USDT", chain=BSC)
    book_coins(alem, cold, other, "10")

    run = reconciliation_run()

    assert sorted((s["asset"], s["reason"]) for s in run.skipped) == [
        ("BNB", "ALEM_BSC_RPC_URL is not set"),
        ("USDT", "only the native coin of BNB Smart Chain is read on chain"),
    ]
    assert run.observed == 0


def test_the_periodic_task_runs_the_reconciliation(alem, cold, bnb, chain):
    send_on_chain(chain, cold.address, ONE_BNB)

    assert tasks.reconciliation_run() == {
        "observed": 1,
        "breaks_opened": 1,
        "skipped": 0,
        "failed": 0,
    }
    assert ReconciliationRun.objects.count() == 1


# ---------------------------------------------------------------------------------------------
# Bitcoin: a local fake Esplora server
# ---------------------------------------------------------------------------------------------


def test_the_confirmed_bitcoin_balance_is_read_from_esplora(alem, btc, settings):
    wallet = custody_account(alem.fund, name="BTC cold", chain="Bitcoin", address="bc1qcold")
    book_coins(alem, wallet, btc, "0.5")
    with FakeEsplora() as esplora:
        settings.ALEM_ESPLORA_URL = esplora.url
        # 0.6 BTC received, 0.1 spent, confirmed; 0.3 more waiting in the mempool (not counted)
        esplora.addresses["bc1qcold"] = (60_000_000, 10_000_000, 30_000_000, 0)

        run = reconciliation_run()

    observation = BalanceObservation.objects.get(account=wallet)
    assert observation.observed_quantity == Decimal("0.5")
    assert observation.block_number == 870_000
    assert run.breaks_opened == 0
    assert esplora.requests == ["/api/blocks/tip/height", "/api/address/bc1qcold"]


def test_one_satoshi_is_dust_and_two_open_a_break(alem, btc, settings):
    wallet = custody_account(alem.fund, name="BTC cold", chain="Bitcoin", address="bc1qcold")
    book_coins(alem, wallet, btc, "1")
    with FakeEsplora() as esplora:
        settings.ALEM_ESPLORA_URL = esplora.url
        esplora.addresses["bc1qcold"] = (100_000_001, 0, 0, 0)
        reconciliation_run()
        assert breaks_of(wallet) == []

        esplora.addresses["bc1qcold"] = (100_000_002, 0, 0, 0)
        reconciliation_run()

    (break_,) = breaks_of(wallet)
    assert break_.difference == Decimal("0.00000002")


def test_an_esplora_answering_errors_is_a_recorded_failure(alem, btc, settings):
    wallet = custody_account(alem.fund, name="BTC cold", chain="Bitcoin", address="bc1qcold")
    book_coins(alem, wallet, btc, "1")
    with FakeEsplora() as esplora:
        settings.ALEM_ESPLORA_URL = esplora.url
        esplora.fail_with = 502

        run = reconciliation_run()

    (failure,) = run.failures
    assert failure["error"].startswith("HTTP 502")
    assert not BalanceObservation.objects.exists()
    assert not ReconciliationBreak.objects.exists()


# ---------------------------------------------------------------------------------------------
# Statements of accounts without an address
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def exchange(alem, bnb):
    return custody_account(alem.fund, name="Exchange", chain=BSC, reference="EX-0042")


def test_a_statement_is_compared_with_the_ledger_as_of_its_date(alem, exchange, bnb, btc):
    yesterday = timezone.now() - dt.timedelta(days=1)
    book_coins(alem, exchange, bnb, "10", booked_at=yesterday - dt.timedelta(hours=1))
    book_coins(alem, exchange, bnb, "5")  # booked after the statement's moment
    content = (
        "asset,balance,as_of\n"
        f"BNB,10.000000000000000000,{yesterday.isoformat()}\n"
        f"BTC,0.25,{yesterday.date().isoformat()}\n"
    ).encode()

    observations = statement_record(
        actor=alem.users["treasury"], account_id=exchange.pk, file_name="ex.csv", content=content
    )

    bnb_seen, _ = observations
    assert (bnb_seen.observed_quantity, bnb_seen.ledger_quantity) == (Decimal(10), Decimal(10))
    assert bnb_seen.source == "statement"
    assert bnb_seen.recorded_by == alem.users["treasury"]
    assert bnb_seen.statement_reference.startswith("ex.csv sha256:")
    (break_,) = breaks_of(exchange)
    assert (break_.asset, break_.difference) == (btc, Decimal("0.25"))
    (recorded,) = events("reconciliation.statement_recorded")
    assert [(b["asset"], b["balance"], b["ledger"]) for b in recorded.payload["balances"]] == [
        ("BNB", "10", "10"),
        ("BTC", "0.25", "0"),
    ]
    assert events("reconciliation.break_opened")[0].actor == alem.users["treasury"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("asset,amount,as_of\nBNB,1,2026-01-01\n", "Line 1: the header must be"),
        ("asset,balance,as_of\nBNB,1,2026-01-01\nDOGE,1,2026-01-01\n", "Line 3: DOGE is not"),
        ("asset,balance,as_of\nBNB,1e3,2026-01-01\n", "Line 2: the balance '1e3'"),
        ("asset,balance,as_of\nBNB,-1,2026-01-01\n", "Line 2: the balance '-1'"),
        ("asset,balance,as_of\nBNB,0.0000000000000000001,2026-01-01\n", "Line 2: the balance"),
        ("asset,balance,as_of\nBNB,1,yesterday\n", "Line 2: as_of 'yesterday'"),
        ("asset,balance,as_of\nBNB,1,2999-01-01\n", "Line 2: as_of 2999-01-01 is in the future"),
        ("asset,balance,as_of\nBNB,1,2026-01-01\nBNB,2,2026-01-01\n", "Line 3: BNB is listed"),
        ("asset,balance,as_of\nBNB,1\n", "Line 2: expected 3 values"),
        ("asset,balance,as_of\n", "The statement has no balances."),
    ],
)
def test_a_bad_statement_is_refused_naming_the_line_and_nothing_is_written(
    alem, exchange, content, message
):
    events_before = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as refused:
        statement_record(
            actor=alem.users["treasury"],
            account_id=exchange.pk,
            file_name="bad.csv",
            content=content.encode(),
        )

    assert refused.value.messages[0].startswith(message)
    assert not BalanceObservation.objects.exists()
    assert AuditEvent.objects.count() == events_before


def test_only_a_treasury_operator_uploads_and_only_for_an_account_without_address(
    alem, exchange, cold
):
    content = b"asset,balance,as_of\nBNB,1,2026-01-01\n"

    with pytest.raises(NotPermitted):
        statement_record(
            actor=alem.users["auditor"], account_id=exchange.pk, file_name="s.csv", content=content
        )
    with pytest.raises(ValidationError, match="reconciled on chain"):
        statement_record(
            actor=alem.users["treasury"], account_id=cold.pk, file_name="s.csv", content=content
        )
    assert not BalanceObservation.objects.exists()


# ---------------------------------------------------------------------------------------------
# The database's own guarantees
# ---------------------------------------------------------------------------------------------


def test_the_database_holds_one_open_break_per_account_and_asset_and_explained_needs_who_and_why(
    alem, cold, bnb, chain
):
    send_on_chain(chain, cold.address, ONE_BNB)
    reconciliation_run()
    (break_,) = breaks_of(cold)
    second = BalanceObservation.objects.create(
        account=cold,
        asset=bnb,
        source="chain",
        observed_quantity=Decimal(2),
        ledger_quantity=Decimal(0),
        difference=Decimal(2),
        observed_at=timezone.now(),
        recorded_at=timezone.now(),
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        ReconciliationBreak.objects.create(
            account=cold,
            asset=bnb,
            opened_at=timezone.now(),
            observation=second,
            ledger_quantity=Decimal(0),
            observed_quantity=Decimal(2),
            difference=Decimal(2),
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        ReconciliationBreak.objects.filter(pk=break_.pk).update(state="explained")
    with pytest.raises(IntegrityError), transaction.atomic():
        ReconciliationBreak.objects.filter(pk=break_.pk).update(
            state="explained", explained_by=alem.users["auditor"], explained_at=timezone.now()
        )


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def page_url(fund):
    return reverse("reconciliation", args=[fund.pk])


def test_the_page_shows_ledger_beside_observed_and_the_open_break(client, alem, cold, bnb, chain):
    send_on_chain(chain, cold.address, 2 * ONE_BNB)
    book_coins(alem, cold, bnb, "1.5")
    reconciliation_run()
    signed_in(client, alem.users["auditor"])

    response = client.get(page_url(alem.fund))

    assert response.status_code == 200
    row = response.context["recon"].rows[0]
    assert (row.asset_symbol, row.ledger_quantity, row.status) == (
        "BNB",
        Decimal("1.5"),
        "open_break",
    )
    assert row.observation.observed_quantity == Decimal(2)
    html = response.content.decode()
    assert "Open break" in html
    assert "a difference of 0.5" in html
    (break_,) = breaks_of(cold)
    assert f'id="id_break{break_.pk}_explanation"' in html  # each break's form its own ids
    assert "badge--bad" in html
    assert "statement-form" not in html  # auditors do not upload statements


@pytest.mark.parametrize("username", ["manager", "committee1", "risk"])
def test_the_page_is_a_404_for_anyone_without_a_reconciliation_role(client, alem, username):
    signed_in(client, alem.users[username])

    assert client.get(page_url(alem.fund)).status_code == 404
    portfolio = client.get(reverse("portfolio", args=[alem.fund.pk])).content.decode()
    assert page_url(alem.fund) not in portfolio


@pytest.mark.parametrize("username", ["auditor", "fundadmin", "treasury"])
def test_the_portfolio_page_links_the_reconciliation_for_those_who_see_it(client, alem, username):
    signed_in(client, alem.users[username])

    portfolio = client.get(reverse("portfolio", args=[alem.fund.pk])).content.decode()

    assert f'href="{page_url(alem.fund)}"' in portfolio
    assert client.get(page_url(alem.fund)).status_code == 200


def test_an_auditor_explains_from_the_page_and_a_treasury_operator_cannot(
    client, alem, cold, bnb, chain
):
    send_on_chain(chain, cold.address, ONE_BNB)
    reconciliation_run()
    (break_,) = breaks_of(cold)
    url = reverse("reconciliation-break-explain", args=[alem.fund.pk, break_.pk])

    signed_in(client, alem.users["treasury"])
    refused = client.post(url, {"explanation": "Fine."})
    assert refused.status_code == 403
    break_.refresh_from_db()
    assert break_.state == "open"

    signed_in(client, alem.users["auditor"])
    response = client.post(url, {"explanation": "Airdrop of a test amount."})
    assert response.status_code == 302
    break_.refresh_from_db()
    assert (break_.state, break_.explanation) == ("explained", "Airdrop of a test amount.")


def test_a_treasury_operator_uploads_a_statement_from_the_page(client, alem, exchange, bnb):
    signed_in(client, alem.users["treasury"])
    url = reverse("reconciliation-statement-upload", args=[alem.fund.pk])
    good = SimpleUploadedFile("s.csv", b"asset,balance,as_of\nBNB,3,2026-01-01\n")
    bad = SimpleUploadedFile("s.csv", b"asset,balance,as_of\nBNB,three,2026-01-01\n")

    refused = client.post(url, {"account": exchange.pk, "file": bad})
    assert refused.status_code == 400
    assert "Line 2: the balance" in refused.content.decode()
    assert not BalanceObservation.objects.exists()

    response = client.post(url, {"account": exchange.pk, "file": good})
    assert response.status_code == 302
    (observation,) = BalanceObservation.objects.all()
    assert observation.observed_quantity == Decimal(3)
    assert breaks_of(exchange)[0].difference == Decimal(3)


# ---------------------------------------------------------------------------------------------
# The status the portfolio and proposal pages show per account
# ---------------------------------------------------------------------------------------------


def test_the_portfolio_page_shows_each_accounts_reconciliation_status(client, alem, bnb):
    exchange = custody_account(alem.fund, name="Exchange", chain=BSC, reference="EX-9")
    unread = custody_account(alem.fund, name="Custodian", chain=BSC, reference="QC-1")
    book_coins(alem, exchange, bnb, "10")

    def statuses():
        signed_in(client, alem.users["auditor"])
        page = client.get(reverse("portfolio", args=[alem.fund.pk])).content.decode()
        return {
            name: page.split(f">{name}<", 1)[1].split("badge badge--", 1)[1].split("<", 1)[0]
            for name in ("Exchange", "Custodian")
        }

    def upload(balance: str) -> None:
        as_of = timezone.now().isoformat()
        statement_record(
            actor=alem.users["treasury"],
            account_id=exchange.pk,
            file_name="ex.csv",
            content=f"asset,balance,as_of\nBNB,{balance},{as_of}\n".encode(),
        )

    upload("10")
    assert statuses() == {
        "Exchange": 'ok">Matches the ledger',
        "Custodian": 'neutral">Not observed yet',
    }
    upload("9.5")
    assert statuses()["Exchange"] == 'bad">Open break'
    (break_,) = breaks_of(exchange)
    break_explain(actor=alem.users["auditor"], break_id=break_.pk, explanation="Exchange fee.")
    assert statuses()["Exchange"] == 'warn">Differs by an explained amount'
    assert unread.pk  # never read: still not observed
