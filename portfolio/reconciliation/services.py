"""Writes of the reconciliation: observations of custody balances, the breaks they open, and
their explanations. Each write is one transaction, audited; nothing here writes the ledger.

Lock order: the custody account's row, then the break's, then the audit chain (last, in
``governance.audit``). An observation and the break it may open are decided under the account's
lock, so two runs (or a run and a statement) never open two breaks for one difference.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from governance import events
from governance.exceptions import NotPermitted
from governance.models import Proposal
from governance.outbox import outbox_enqueue
from governance.roles import has_role
from portfolio.exceptions import BreakNotOpen
from portfolio.models import (
    AccountPosition,
    Asset,
    BalanceObservation,
    CustodyAccount,
    FundRole,
    LedgerEntry,
    ReconciliationBreak,
    ReconciliationRun,
    same_chain,
)
from portfolio.reconciliation import readers, rules
from portfolio.selectors import account_quantity

logger = logging.getLogger(__name__)

Source = BalanceObservation.Source


# ---------------------------------------------------------------------------------------------
# Observing a balance, and the break it may open
# ---------------------------------------------------------------------------------------------


def _ledger_quantity(account: CustodyAccount, asset: Asset, *, as_of: dt.datetime | None):
    """The ledger's balance of ``asset`` in ``account``: its running position now, or the sum
    of its entries booked by ``as_of``."""
    if as_of is None:
        return account_quantity(account.pk, asset.pk)
    total = LedgerEntry.objects.filter(
        account=account, asset=asset, booked_at__lte=as_of
    ).aggregate(total=Sum("quantity"))["total"]
    return total or Decimal(0)


def _observe(
    account: CustodyAccount,
    asset: Asset,
    quantity: Decimal,
    *,
    source: str,
    observed_at: dt.datetime,
    recorded_at: dt.datetime,
    block_number: int | None = None,
    statement_reference: str = "",
    recorded_by=None,
) -> tuple[BalanceObservation, ReconciliationBreak | None]:
    """Record one observation and open a break when ``rules.opens_break`` says so.

    Preconditions: inside a transaction holding the account's row lock.
    Effects: a ``BalanceObservation``; for a break, a ``ReconciliationBreak``, audit event
    ``reconciliation.break_opened`` and the e-mail to the fund's auditors and administrators
    queued in the outbox.
    """
    ledger = _ledger_quantity(
        account, asset, as_of=observed_at if source == Source.STATEMENT else None
    )
    observation = BalanceObservation.objects.create(
        account=account,
        asset=asset,
        source=source,
        observed_quantity=quantity,
        ledger_quantity=ledger,
        difference=quantity - ledger,
        observed_at=observed_at,
        recorded_at=recorded_at,
        block_number=block_number,
        statement_reference=statement_reference,
        recorded_by=recorded_by,
    )
    dust = rules.dust_for(asset.symbol)
    latest = (
        ReconciliationBreak.objects.filter(account=account, asset=asset)
        .order_by("-opened_at", "-pk")
        .first()
    )
    matched_since = (
        latest is not None
        and BalanceObservation.objects.filter(
            account=account,
            asset=asset,
            pk__gt=latest.observation_id,
            pk__lt=observation.pk,
            difference__gte=-dust,
            difference__lte=dust,
        ).exists()
    )
    opens = rules.opens_break(
        observation.difference,
        dust,
        open_break=latest is not None and latest.state == ReconciliationBreak.State.OPEN,
        explained_difference=latest.difference if latest is not None else None,
        matched_since=matched_since,
    )
    if not opens:
        return observation, None
    break_ = ReconciliationBreak.objects.create(
        account=account,
        asset=asset,
        opened_at=recorded_at,
        observation=observation,
        ledger_quantity=ledger,
        observed_quantity=quantity,
        difference=observation.difference,
    )
    events.reconciliation_break_opened_event(break_=break_)
    from portfolio import tasks

    outbox_enqueue(tasks.reconciliation_break_notify, break_.pk)
    logger.warning(
        "Reconciliation break #%s: %s %s in %s (#%s) observed, the ledger has %s.",
        break_.pk,
        quantity,
        asset.symbol,
        account.name,
        account.pk,
        ledger,
    )
    return observation, break_


def _lock_account(account_id: int) -> CustodyAccount:
    return CustodyAccount.objects.select_for_update().select_related("fund").get(pk=account_id)


# ---------------------------------------------------------------------------------------------
# The periodic run over every custody address
# ---------------------------------------------------------------------------------------------


def _account_json(account: CustodyAccount, asset_symbol: str) -> dict:
    return {
        "account": account.pk,
        "account_name": account.name,
        "fund": account.fund_id,
        "chain": account.chain,
        "asset": asset_symbol,
    }


def _assets_to_read(account: CustodyAccount, assets: list[Asset]) -> tuple[list[Asset], list]:
    """The native coin of the account's chain and every asset the account has a position in;
    and ``(symbol, reason)`` for those no reader can read."""
    coin = readers.native_coin(account.chain)
    held = set(AccountPosition.objects.filter(account=account).values_list("asset_id", flat=True))
    native = [a for a in assets if a.symbol == coin and same_chain(a.chain, account.chain)]
    unreadable = []
    if coin and not native:
        unreadable.append((coin, f"no asset {coin} on the chain {account.chain!r} in Alem"))
    for asset in assets:
        if asset.pk in held and asset not in native:
            unreadable.append(
                (asset.symbol, f"only the native coin of {account.chain} is read on chain")
            )
    return native, unreadable


def reconciliation_run(*, now: dt.datetime | None = None) -> ReconciliationRun:
    """Read the balance of every active custody account with an address and compare it with the
    ledger's position of that account.

    Preconditions: none; safe to run twice at once (each observation is decided under its
    account's lock). Reads the chains outside any transaction.
    Effects: one ``BalanceObservation`` per reading, in its own transaction, each possibly
    opening a break (see ``_observe``); a ``ReconciliationRun`` listing what was skipped (no
    node configured, an asset no reader can read) and what failed (the node down or answering
    nonsense), neither of which ever opens a break. Never writes the ledger.
    """
    started_at = now or timezone.now()
    assets = list(Asset.objects.order_by("symbol"))
    chain_readers: dict[str, object] = {}
    skipped, failures = [], []
    observed = opened = 0
    accounts = (
        CustodyAccount.objects.filter(active=True)
        .exclude(address="")
        .select_related("fund")
        .order_by("pk")
    )
    for account in accounts:
        native, unreadable = _assets_to_read(account, assets)
        for symbol, reason in unreadable:
            skipped.append({**_account_json(account, symbol), "reason": reason})
        if not native:
            continue
        key = account.chain.strip().casefold()
        if key not in chain_readers:
            chain_readers[key] = readers.reader_for(account.chain)
        reader = chain_readers[key]
        asset = native[0]
        if reader is None:
            reason = readers.unread_reason(account.chain)
            skipped.append({**_account_json(account, asset.symbol), "reason": reason})
            continue
        try:
            reading = reader.native_balance(account.address)
        except readers.ReadError as error:
            logger.warning("Reading %s (#%s) failed: %s", account.name, account.pk, error)
            failures.append({**_account_json(account, asset.symbol), "error": str(error)})
            continue
        with transaction.atomic():
            locked = _lock_account(account.pk)
            if not locked.active:  # removed while the chain was read
                continue
            _, break_ = _observe(
                locked,
                asset,
                reading.quantity,
                source=Source.CHAIN,
                observed_at=now or timezone.now(),
                recorded_at=now or timezone.now(),
                block_number=reading.block_number,
            )
        observed += 1
        opened += break_ is not None
    for reader in chain_readers.values():
        if reader is not None:
            reader.close()
    return ReconciliationRun.objects.create(
        started_at=started_at,
        finished_at=max(started_at, now or timezone.now()),
        observed=observed,
        breaks_opened=opened,
        skipped=skipped,
        failures=failures,
    )


# ---------------------------------------------------------------------------------------------
# Statements of accounts without an address
# ---------------------------------------------------------------------------------------------


def statement_record(
    *, actor, account_id: int, file_name: str, content: bytes, now: dt.datetime | None = None
) -> list[BalanceObservation]:
    """Record a custodian's or exchange's statement of an account without a public address:
    one balance per asset, each compared with the ledger's balance of the account at the
    statement's ``as_of``.

    Preconditions: ``actor`` holds ``execute_trades`` on the account's fund; the account is
    active and has no address (an address is read on chain); the CSV is valid throughout
    (``rules.statement_parse``: a bad line refuses the whole file, naming the line).
    Effects: one ``BalanceObservation`` per line, each possibly opening a break (audited and
    e-mailed, see ``_observe``); audit event ``reconciliation.statement_recorded``.
    """
    now = now or timezone.now()
    account = CustodyAccount.objects.select_related("fund").get(pk=account_id)
    if not has_role(actor, account.fund, FundRole.EXECUTE_TRADES):
        raise NotPermitted("Recording a statement needs the execute_trades role on the fund.")
    if account.address:
        raise ValidationError(
            {"account": "This account has a public address: it is reconciled on chain."}
        )
    if not account.active:
        raise ValidationError({"account": "This account was removed."})
    assets = {asset.symbol: asset for asset in Asset.objects.all()}
    lines = rules.statement_parse(content, known_assets=set(assets), now=now)
    name = (file_name or "statement.csv").replace("\n", " ")[-200:]
    reference = f"{name} sha256:{hashlib.sha256(content).hexdigest()[:16]}"
    with transaction.atomic():
        locked = _lock_account(account.pk)
        observations = [
            _observe(
                locked,
                assets[line.asset],
                line.balance,
                source=Source.STATEMENT,
                observed_at=line.as_of,
                recorded_at=now,
                statement_reference=reference,
                recorded_by=actor,
            )[0]
            for line in lines
        ]
        events.reconciliation_statement_recorded_event(
            actor=actor, account=locked, reference=reference, observations=observations
        )
    return observations


# ---------------------------------------------------------------------------------------------
# Explaining a break
# ---------------------------------------------------------------------------------------------


def break_explain_refusal(actor, break_: ReconciliationBreak, *, with_proposal: bool):
    """Why ``actor`` may not explain ``break_`` (``NotPermitted``), or None.

    An auditor of the fund explains with a comment or a linked proposal; a fund administrator
    (``manage_policy``) only by linking a proposal: the administrator runs the fund, so a comment
    of theirs would be the fund vouching for itself.
    """
    fund = break_.account.fund
    if has_role(actor, fund, FundRole.AUDIT):
        return None
    if with_proposal and has_role(actor, fund, FundRole.MANAGE_POLICY):
        return None
    if with_proposal:
        return NotPermitted(
            "Linking a proposal to a break needs the audit or manage_policy role on the fund."
        )
    return NotPermitted("Only an auditor of the fund explains a break with a comment.")


def break_explain(
    *, actor, break_id: int, explanation: str = "", proposal_id: int | None = None
) -> ReconciliationBreak:
    """Explain an open break and so close it: with an auditor's comment, or with the proposal
    of the same fund that accounts for the difference (and an optional note).

    Preconditions: the break is open (``BreakNotOpen`` otherwise); ``break_explain_refusal``
    finds nothing; a linked proposal is the same fund's. Locks the break.
    Effects: the break explained (``explained_by``, ``explained_at``, ``explanation``,
    ``proposal``); audit event ``reconciliation.break_explained``. The ledger is not touched.
    """
    explanation = (explanation or "").strip()
    if not explanation and proposal_id is None:
        raise ValidationError({"explanation": "Say what explains the difference."})
    with transaction.atomic():
        break_ = (
            ReconciliationBreak.objects.select_for_update(of=("self",))
            .select_related("account__fund", "asset")
            .get(pk=break_id)
        )
        refusal = break_explain_refusal(actor, break_, with_proposal=proposal_id is not None)
        if refusal is not None:
            raise refusal
        if break_.state != ReconciliationBreak.State.OPEN:
            raise BreakNotOpen(f"Break #{break_.pk} is already explained.")
        proposal = None
        if proposal_id is not None:
            proposal = Proposal.objects.filter(pk=proposal_id).first()
            if proposal is None or proposal.fund_id != break_.account.fund_id:
                raise ValidationError({"proposal": "No such proposal of this fund."})
        break_.state = ReconciliationBreak.State.EXPLAINED
        break_.explained_by = actor
        break_.explained_at = timezone.now()
        break_.explanation = explanation
        break_.proposal = proposal
        break_.save(
            update_fields=["state", "explained_by", "explained_at", "explanation", "proposal"]
        )
        events.reconciliation_break_explained_event(actor=actor, break_=break_)
    return break_
