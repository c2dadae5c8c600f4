"""Executions: the fills a treasury operator records against an approved proposal (rule 10)."""

import datetime as dt
import re
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import events, operations, permissions, policies
from governance.exceptions import (
    DuplicateExternalRef,
    ExecutionRefused,
    GovernanceError,
    InvalidTransition,
)
from governance.models import TX_HASH, Execution, Proposal
from governance.roles import roles_on_fund
from governance.second_factor import second_factor_confirm
from governance.services._locks import lock_accounts, lock_proposal
from portfolio import selectors as books_read
from portfolio import services as books
from portfolio.fields import EXACT_DIGITS
from portfolio.models import AccountPosition, LedgerEntry, Position
from portfolio.prices.selectors import consensus_for
from portfolio.text import external_ref_normalise, refuse_hidden_characters


def _existing_fill(external_ref: str, proposal_id: int) -> Execution | None:
    """The fill already booked under ``external_ref``, if it was booked for this proposal."""
    existing = Execution.objects.filter(external_ref__iexact=external_ref).first()
    if existing is not None and existing.proposal_id != proposal_id:
        raise DuplicateExternalRef(
            f"External reference {external_ref!r} is already booked against another proposal."
        )
    return existing


def _refuse(code: str, detail: str, **context):
    raise ExecutionRefused(detail, code=code, context=context)


def _check_fee(fund, *, fee, value, unit: str) -> None:
    """A fee is money leaving the fund for nothing held: bounded by the fill's own value (in
    USD, or for a transfer's network fee in units), so a tiny fill cannot carry a large
    payment past the notional check."""
    max_fee = value * fund.max_fee_share
    names = ("fee_usd", "value_usd", "max_fee_usd")
    if unit != "USD":
        names = ("fee_quantity", "quantity", "max_fee_quantity")
    if fee > max_fee:
        _refuse(
            "fee_above_limit",
            f"The fee of {unit} {fee.normalize():f} is above the fund's limit of "
            f"{fund.max_fee_share:.2%} of the fill's value of {unit} {value.normalize():f}: at "
            f"most {unit} {max_fee.normalize():f}.",
            **dict(zip(names, (str(fee), str(value), str(max_fee)), strict=True)),
        )


def _check_consensus(proposal: Proposal, *, executed_at: dt.datetime, price_usd=None) -> dict:
    """The consensus price at the execution time must be usable; a traded price must lie
    within the fund's tolerance of it. Returns the consensus as evidence."""
    consensus = consensus_for(proposal.asset, at=executed_at)
    evidence = consensus.as_json()
    if not consensus.usable:
        flags = ", ".join(consensus.flags) or "no price"
        _refuse(
            "consensus_unusable",
            f"The consensus price at the execution time cannot back a fill ({flags}).",
            consensus=evidence,
        )
    if price_usd is not None:
        deviation = abs(price_usd - consensus.price) / consensus.price
        if deviation > proposal.fund.price_tolerance:
            _refuse(
                "price_outside_tolerance",
                f"Price USD {price_usd} is {deviation:.2%} from the consensus USD "
                f"{consensus.price}; the fund tolerates {proposal.fund.price_tolerance:.2%}.",
                consensus=evidence,
            )
    return evidence


def _check_accounts(proposal: Proposal, *, now: dt.datetime) -> None:
    """The custody accounts the proposal names are usable now: not removed, cooled off."""
    problems = operations.account_problems(proposal, now=now)
    if problems:
        _refuse("account_unusable", " ".join(problems))


def _check_units(proposal: Proposal, *, quantity: Decimal, fee_quantity: Decimal, now) -> None:
    """A sale, transfer or intake moves no more than its remaining quantity, through accounts
    usable now, and takes out of its account no more than the account holds."""
    remaining = proposal.remaining_quantity
    if quantity > remaining:
        _refuse(
            "over_quantity",
            f"The fill moves {quantity.normalize():f} but only {remaining.normalize():f} of the "
            "approved quantity remains.",
            remaining_quantity=str(remaining),
        )
    _check_accounts(proposal, now=now)
    if proposal.kind in (Proposal.Kind.SELL, Proposal.Kind.TRANSFER):
        held = books_read.account_quantity(proposal.account_id, proposal.asset_id)
        needed = quantity + fee_quantity
        if needed > held:
            _refuse(
                "insufficient_holdings",
                f"The account {proposal.account.name} holds {held.normalize():f} "
                f"{proposal.asset.symbol}; the fill takes out {needed.normalize():f}.",
                held=str(held),
                needed=str(needed),
            )


def _check_fill_terms(
    proposal: Proposal,
    *,
    quantity: Decimal,
    price_usd: Decimal | None,
    fee_usd: Decimal,
    fee_quantity: Decimal,
    executed_at: dt.datetime,
    now: dt.datetime,
) -> tuple[dict, Decimal]:
    """Rule 10 for the terms of one fill of ``proposal``'s kind; returns the consensus evidence
    it was checked against and the unit price it is booked at (the traded price of a buy or
    sale, the consensus price of a transfer or an intake of coins, 1 for US dollars). Called
    with ``EXACT_DIGITS`` in force."""
    kind = proposal.kind
    if executed_at > now:
        _refuse("executed_in_future", "The execution time is in the future.")
    if executed_at < proposal.decided_at:
        _refuse("executed_before_approval", "The execution time is before the approval.")
    if kind == Proposal.Kind.BUY:
        if price_usd > proposal.limit_price_usd:
            _refuse(
                "above_limit_price",
                f"Price USD {price_usd} is above the limit price USD {proposal.limit_price_usd}.",
            )
        _check_fee(proposal.fund, fee=fee_usd, value=quantity * price_usd, unit="USD")
        _check_accounts(proposal, now=now)
        cost_usd = quantity * price_usd + fee_usd
        remaining = proposal.remaining_usd
        if cost_usd > remaining:
            _refuse(
                "over_notional",
                f"The fill costs USD {cost_usd} but only USD {remaining} of the approved "
                "notional remains.",
                remaining_usd=str(remaining),
            )
        return _check_consensus(proposal, executed_at=executed_at, price_usd=price_usd), price_usd
    _check_units(proposal, quantity=quantity, fee_quantity=fee_quantity, now=now)
    if kind == Proposal.Kind.SELL:
        if price_usd < proposal.limit_price_usd:
            _refuse(
                "below_limit_price",
                f"Price USD {price_usd} is below the lowest price USD {proposal.limit_price_usd}.",
            )
        _check_fee(proposal.fund, fee=fee_usd, value=quantity * price_usd, unit="USD")
        return _check_consensus(proposal, executed_at=executed_at, price_usd=price_usd), price_usd
    if kind == Proposal.Kind.TRANSFER:
        _check_fee(proposal.fund, fee=fee_quantity, value=quantity, unit=proposal.asset.symbol)
    if proposal.asset is None:
        return {"asset": "USD", "price_usd": "1", "usable": True}, Decimal("1")
    # An intake is valued, and a transfer's coins carried, at the consensus price at the
    # moment: a flagged price blocks rather than books a guess.
    evidence = _check_consensus(proposal, executed_at=executed_at)
    return evidence, Decimal(evidence["price_usd"])


def execution_record(
    *,
    proposal_id: int,
    actor,
    quantity: Decimal,
    venue: str,
    external_ref: str,
    executed_at: dt.datetime,
    otp_token: str | None,
    price_usd: Decimal | None = None,
    fee_usd: Decimal = Decimal("0"),
    fee_quantity: Decimal = Decimal("0"),
    close: bool = False,
    tx_hash: str = "",
) -> tuple[Execution, bool]:
    """Record one fill of an approved proposal, of its kind; returns (execution, created).

    Preconditions, for every kind: lock held on the proposal and on the custody accounts it
    names; ``permissions.fill_refusal`` allows it, asked in its two halves around the replay of
    a booked reference (``actor`` holds ``execute_trades``, is not the author and did not
    approve it; state ``approved`` and not past its expiry); executed between the approval and
    now; the accounts usable at the moment (not removed, cooled off); ``otp_token`` is a fresh
    code from the actor's confirmed TOTP device (step-up), consumed once the other checks pass.
    Then by kind:

    - buy: ``price_usd`` at most the limit price and within the fund's tolerance of a usable
      consensus price at the execution time; fee at most the fund's ``max_fee_share`` of
      quantity x price; total cost within the approved notional;
    - sell: ``price_usd`` at least the lowest price and within the tolerance; the same fee
      bound; quantity within what remains approved and what the account holds;
    - transfer: quantity within what remains; ``fee_quantity`` (the network's fee, in units)
      at most ``max_fee_share`` of the quantity; both taken from the source account, which must
      hold them; valued at a usable consensus price;
    - intake: quantity within what remains; valued at a usable consensus price at acceptance
      (US dollars at par); no fee.

    The same ``external_ref`` again, in the spelling ``portfolio.text.external_ref_normalise``
    gives it (same proposal, same permitted actor), returns the booked fill (``created`` False)
    and books nothing; on another proposal it is refused.
    Effects: the execution and its ledger entries (``_book_fill``); the executed notional (buy)
    or quantity (the others) grows; the fill that uses all of it, or ``close=True``, moves the
    proposal to ``executed``. Audit ``execution.recorded`` (and ``proposal.executed``); a
    refusal is audited as ``execution.refused``. Arithmetic is exact (``EXACT_DIGITS``).
    """
    if (
        quantity <= 0
        or fee_usd < 0
        or fee_quantity < 0
        or (price_usd is not None and price_usd <= 0)
    ):
        raise ValidationError("Quantity and price must be positive and the fee not negative.")
    if not external_ref_normalise(external_ref) or not venue.strip():
        raise ValidationError({"external_ref": "The venue and external reference are required."})
    if timezone.is_naive(executed_at):
        raise ValidationError({"executed_at": "The execution time needs its UTC offset."})
    tx_hash = tx_hash.strip()
    if tx_hash and not re.fullmatch(TX_HASH, tx_hash):
        raise ValidationError(
            {"tx_hash": "A transaction hash is 64 hex digits (0x first on EVM chains)."}
        )
    refusal = None
    with localcontext(prec=EXACT_DIGITS), transaction.atomic():
        proposal = lock_proposal(proposal_id)
        _validate_fill_terms(
            proposal, price_usd=price_usd, fee_usd=fee_usd, fee_quantity=fee_quantity
        )
        lock_accounts(operations.accounts_of(proposal))
        roles = roles_on_fund(actor, proposal.fund)
        chain = proposal.asset.chain if proposal.asset else ""
        fill = {
            "quantity": quantity,
            "price_usd": price_usd,
            "fee_usd": fee_usd,
            "fee_quantity": fee_quantity,
            "venue": venue,
            # One spelling per reference: the same hash typed differently is the same fill.
            "external_ref": external_ref_normalise(external_ref, chain=chain),
            "executed_at": executed_at,
            "tx_hash": tx_hash,
        }
        try:
            permissions.raise_if_refused(permissions.executor_refusal(actor, proposal, roles=roles))
            existing = _existing_fill(fill["external_ref"], proposal_id)
            if existing is not None:
                return existing, False
            now = timezone.now()
            permissions.raise_if_refused(permissions.fill_window_refusal(proposal, now=now))
            evidence, fill["price_usd"] = _check_fill_terms(
                proposal,
                quantity=quantity,
                price_usd=price_usd,
                fee_usd=fee_usd,
                fee_quantity=fee_quantity,
                executed_at=executed_at,
                now=now,
            )
            device = second_factor_confirm(user=actor, otp_token=otp_token)
        except GovernanceError as exc:
            refusal = exc
            events.execution_refused_event(actor=actor, proposal=proposal, refusal=exc, fill=fill)
        else:
            execution = _book_fill(
                proposal, actor, close=close, evidence=evidence, confirmed_by_device=device, **fill
            )
            return execution, True
    raise refusal


def _validate_fill_terms(proposal: Proposal, *, price_usd, fee_usd, fee_quantity) -> None:
    """The terms a fill of the proposal's kind takes: a buy or sale its traded price; a
    transfer a network fee in units; an intake neither a price nor a fee."""
    errors = {}
    trades = proposal.kind in (Proposal.Kind.BUY, Proposal.Kind.SELL)
    if trades and price_usd is None:
        errors["price_usd"] = "A buy or a sale is recorded at its traded price."
    if not trades and price_usd is not None:
        errors["price_usd"] = "A transfer or an intake is valued at the consensus price."
    if not trades and fee_usd:
        errors["fee_usd"] = "A transfer's fee is in units of the asset (fee_quantity)."
    if proposal.kind != Proposal.Kind.TRANSFER and fee_quantity:
        errors["fee_quantity"] = "Only a transfer pays a network fee in units."
    if errors:
        raise ValidationError(errors)


def _cost_share(cost: Decimal, quantity: Decimal, part: Decimal) -> Decimal:
    """The cost of ``part`` of a holding of ``quantity`` that cost ``cost`` in all: its average
    cost, rounded to the ledger's decimals, and all of it when ``part`` is the whole."""
    if part == quantity:
        return cost
    places = Decimal(1).scaleb(-LedgerEntry._meta.get_field("value_usd").decimal_places)
    return (cost * part / quantity).quantize(places, rounding=ROUND_HALF_EVEN)


def _book_fill(proposal: Proposal, actor, *, close: bool, **fill) -> Execution:
    """Write the execution and book its ledger entries, by kind:

    - buy: the coins into the account (cost quantity x price), the cash out, the fee out;
    - sell: the coins out of the account at the fund's average cost, the proceeds in, the fee
      out; the realised profit or loss is the net proceeds less that cost;
    - transfer: the coins out of the source and into the destination at the source's average
      cost, and the network's fee out of the source at that cost;
    - intake: the coins (or US dollars) in from the funding source at the consensus value.
    """
    kind, fund, asset = proposal.kind, proposal.fund, proposal.asset
    quantity, price, fee = fill["quantity"], fill["price_usd"], fill["fee_usd"]
    gross = quantity * price
    cost_usd = {
        Proposal.Kind.BUY: gross + fee,
        Proposal.Kind.SELL: gross - fee,
    }.get(kind, gross)
    extra = {"kind": kind, "cost_usd": cost_usd, "account": proposal.account}
    if kind == Proposal.Kind.TRANSFER:
        extra["destination_account"] = proposal.destination_account
    if kind == Proposal.Kind.SELL:
        held = Position.objects.get(fund=fund, asset=asset)
        sold_cost = _cost_share(held.cost_usd, held.quantity, quantity)
        extra["realised_pnl_usd"] = cost_usd - sold_cost
    if kind == Proposal.Kind.TRANSFER:
        held = AccountPosition.objects.get(account=proposal.account, asset=asset)
        moved_cost = _cost_share(held.cost_usd, held.quantity, quantity)
        fee_cost = _cost_share(held.cost_usd, held.quantity, fill["fee_quantity"])
    try:
        with transaction.atomic():
            execution = Execution.objects.create(
                proposal=proposal, recorded_by=actor, **fill, **extra
            )
    except IntegrityError as exc:
        # The same external reference was booked concurrently on another proposal.
        raise DuplicateExternalRef(
            f"External reference {fill['external_ref']!r} is already booked."
        ) from exc
    ref = f"execution:{execution.pk}"
    bookings = []

    def book(entry_kind, quantity, value_usd, suffix, *, coins=True, **more):
        """One ledger entry of this fill: of the asset in the proposal's account (``coins``),
        or of cash."""
        where = {"asset": asset, "account": proposal.account} if coins and asset else {}
        bookings.append(
            {
                "fund": fund,
                "booked_at": execution.executed_at,
                "booked_by": actor,
                "kind": entry_kind,
                "quantity": quantity,
                "value_usd": value_usd,
                "reference": f"{ref}:{suffix}",
                **where,
                **more,
            }
        )

    entry = LedgerEntry.Kind
    if kind == Proposal.Kind.BUY:
        book(entry.BUY, quantity, gross, "asset")
        book(entry.BUY, -gross, -gross, "cash", coins=False)
    elif kind == Proposal.Kind.SELL:
        book(entry.SELL, -quantity, -sold_cost, "asset")
        book(entry.SELL, gross, gross, "cash", coins=False)
    elif kind == Proposal.Kind.TRANSFER:
        book(entry.TRANSFER, -quantity, -moved_cost, "out")
        book(entry.TRANSFER, quantity, moved_cost, "in", account=proposal.destination_account)
        if fill["fee_quantity"]:
            book(entry.FEE, -fill["fee_quantity"], -fee_cost, "fee")
    else:
        funding = {"funding_source": proposal.funding_source, "memo": proposal.document_reference}
        book(entry.CONTRIBUTION, quantity, gross, "intake", **funding)
    if fee and kind in (Proposal.Kind.BUY, Proposal.Kind.SELL):
        book(entry.FEE, -fee, -fee, "fee", coins=False)
    try:
        with transaction.atomic():
            entries = [books.ledger_entry_book(**booking) for booking in bookings]
    except IntegrityError as exc:
        # The account's running position refuses to go below zero (a racing writer got there
        # first, or the books were changed behind the services).
        raise ExecutionRefused(
            "The custody account does not hold what the fill takes out.",
            code="insufficient_holdings",
        ) from exc
    if kind == Proposal.Kind.BUY:
        proposal.executed_notional_usd += execution.cost_usd
        done = proposal.remaining_usd == 0
    else:
        proposal.executed_quantity += quantity
        done = proposal.remaining_quantity == 0
    events.execution_recorded_event(execution=execution, entries=entries)
    if close or done:
        _mark_executed(proposal, actor, reason="closed with the fill" if close else "fully filled")
    proposal.save(
        update_fields=["executed_notional_usd", "executed_quantity", "state", "updated_at"]
    )
    return execution


def _mark_executed(proposal: Proposal, actor, *, reason: str) -> None:
    proposal.state = policies.transition("execute", proposal.state)
    events.proposal_executed_event(actor=actor, proposal=proposal, reason=reason)


def proposal_close(*, proposal_id: int, actor, reason: str = "") -> Proposal:
    """Close a partly executed proposal: the rest of its notional is released.

    Preconditions: lock held; ``permissions.fill_refusal`` allows it (``actor`` may execute it;
    state ``approved``, not past its expiry); at least one fill.
    Effects: state ``executed``; audit ``proposal.executed`` with the unspent notional.
    """
    refuse_hidden_characters(reason=reason)
    with transaction.atomic():
        proposal = lock_proposal(proposal_id)
        permissions.raise_if_refused(permissions.fill_refusal(actor, proposal))
        if not proposal.has_fills:
            raise InvalidTransition(
                "Nothing has been executed; let the approval expire or have the author withdraw."
            )
        with localcontext(prec=EXACT_DIGITS):
            _mark_executed(proposal, actor, reason=reason or "closed by the treasury")
        proposal.save(update_fields=["state", "updated_at"])
    return proposal
