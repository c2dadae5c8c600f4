"""Executions: the fills a treasury operator records against an approved proposal (rule 10)."""

import datetime as dt
import re
from decimal import Decimal, localcontext

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import events, permissions, policies
from governance.exceptions import (
    DuplicateExternalRef,
    ExecutionRefused,
    GovernanceError,
    InvalidTransition,
)
from governance.models import TX_HASH, Execution, Proposal
from governance.roles import roles_on_fund
from governance.second_factor import second_factor_confirm
from governance.services._locks import lock_proposal
from portfolio import services as books
from portfolio.fields import EXACT_DIGITS
from portfolio.models import LedgerEntry
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


def _check_fill_terms(
    proposal: Proposal,
    *,
    quantity: Decimal,
    price_usd: Decimal,
    fee_usd: Decimal,
    cost_usd: Decimal,
    executed_at: dt.datetime,
    now: dt.datetime,
) -> dict:
    """Rule 10 for the terms of one fill the executor may record; returns the consensus
    evidence it was checked against. Called with ``EXACT_DIGITS`` in force."""

    def refuse(code: str, detail: str, **context):
        raise ExecutionRefused(detail, code=code, context=context)

    if executed_at > now:
        refuse("executed_in_future", "The execution time is in the future.")
    if executed_at < proposal.decided_at:
        refuse("executed_before_approval", "The execution time is before the approval.")
    if price_usd > proposal.limit_price_usd:
        refuse(
            "above_limit_price",
            f"Price USD {price_usd} is above the limit price USD {proposal.limit_price_usd}.",
        )
    # A fee is money leaving the fund for nothing held: bounded by the fill's own value, so a
    # tiny fill cannot carry a large payment past the notional check.
    value_usd = quantity * price_usd
    max_fee_usd = value_usd * proposal.fund.max_fee_share
    if fee_usd > max_fee_usd:
        refuse(
            "fee_above_limit",
            f"The fee of USD {fee_usd.normalize():f} is above the fund's limit of "
            f"{proposal.fund.max_fee_share:.2%} of the fill's value of USD "
            f"{value_usd.normalize():f}: at most USD {max_fee_usd.normalize():f}.",
            fee_usd=str(fee_usd),
            value_usd=str(value_usd),
            max_fee_usd=str(max_fee_usd),
        )
    remaining = proposal.remaining_usd
    if cost_usd > remaining:
        refuse(
            "over_notional",
            f"The fill costs USD {cost_usd} but only USD {remaining} of the approved notional "
            "remains.",
            remaining_usd=str(remaining),
        )
    consensus = consensus_for(proposal.asset, at=executed_at)
    evidence = consensus.as_json()
    if not consensus.usable:
        flags = ", ".join(consensus.flags) or "no price"
        refuse(
            "consensus_unusable",
            f"The consensus price at the execution time cannot back a fill ({flags}).",
            consensus=evidence,
        )
    deviation = abs(price_usd - consensus.price) / consensus.price
    if deviation > proposal.fund.price_tolerance:
        refuse(
            "price_outside_tolerance",
            f"Price USD {price_usd} is {deviation:.2%} from the consensus USD {consensus.price}; "
            f"the fund tolerates {proposal.fund.price_tolerance:.2%}.",
            consensus=evidence,
        )
    return evidence


def execution_record(
    *,
    proposal_id: int,
    actor,
    quantity: Decimal,
    price_usd: Decimal,
    fee_usd: Decimal,
    venue: str,
    external_ref: str,
    executed_at: dt.datetime,
    otp_token: str | None,
    close: bool = False,
    tx_hash: str = "",
) -> tuple[Execution, bool]:
    """Record one fill of an approved proposal; returns (execution, created).

    Preconditions: lock held on the proposal; ``permissions.fill_refusal`` allows it, asked in
    its two halves around the replay of a booked reference (``actor`` holds ``execute_trades``,
    is not the author and did not approve it; state ``approved`` and not past its expiry);
    executed between the approval and now; price at most the limit price
    and within the fund's tolerance of a usable consensus price at the execution time; fee at
    most the fund's ``max_fee_share`` of quantity x price; total cost within the approved
    notional; ``otp_token`` is a fresh code from the actor's confirmed
    TOTP device (step-up), consumed once the other checks pass. The same ``external_ref`` again,
    in the spelling ``portfolio.text.external_ref_normalise`` gives it (same proposal, same
    permitted actor), returns the booked fill (``created`` False) and books nothing; on another
    proposal it is refused.
    Effects: the execution; ledger entries (asset in, cash out, fee out); the executed notional
    grows; the fill that uses the whole notional, or ``close=True``, moves the proposal to
    ``executed``. Audit ``execution.recorded`` (and ``proposal.executed``); a refusal is audited
    as ``execution.refused``. Arithmetic is exact (``EXACT_DIGITS``).
    """
    if quantity <= 0 or price_usd <= 0 or fee_usd < 0:
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
        cost_usd = quantity * price_usd + fee_usd
        proposal = lock_proposal(proposal_id)
        roles = roles_on_fund(actor, proposal.fund)
        fill = {
            "quantity": quantity,
            "price_usd": price_usd,
            "fee_usd": fee_usd,
            "venue": venue,
            # One spelling per reference: the same hash typed differently is the same fill.
            "external_ref": external_ref_normalise(external_ref, chain=proposal.asset.chain),
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
            evidence = _check_fill_terms(
                proposal,
                quantity=quantity,
                price_usd=price_usd,
                fee_usd=fee_usd,
                cost_usd=cost_usd,
                executed_at=executed_at,
                now=now,
            )
            device = second_factor_confirm(user=actor, otp_token=otp_token)
        except GovernanceError as exc:
            refusal = exc
            events.execution_refused_event(actor=actor, proposal=proposal, refusal=exc, fill=fill)
        else:
            execution = _book_fill(
                proposal,
                actor,
                close=close,
                cost_usd=cost_usd,
                evidence=evidence,
                confirmed_by_device=device,
                **fill,
            )
            return execution, True
    raise refusal


def _book_fill(proposal: Proposal, actor, *, close: bool, **fill) -> Execution:
    try:
        with transaction.atomic():
            execution = Execution.objects.create(proposal=proposal, recorded_by=actor, **fill)
    except IntegrityError as exc:
        # The same external reference was booked concurrently on another proposal.
        raise DuplicateExternalRef(
            f"External reference {fill['external_ref']!r} is already booked."
        ) from exc
    gross = execution.quantity * execution.price_usd
    common = {"fund": proposal.fund, "booked_at": execution.executed_at, "booked_by": actor}
    entries = [
        books.ledger_entry_book(
            kind=LedgerEntry.Kind.BUY,
            asset=proposal.asset,
            quantity=execution.quantity,
            value_usd=gross,
            reference=f"execution:{execution.pk}:asset",
            **common,
        ),
        books.ledger_entry_book(
            kind=LedgerEntry.Kind.BUY,
            quantity=-gross,
            value_usd=-gross,
            reference=f"execution:{execution.pk}:cash",
            **common,
        ),
    ]
    if execution.fee_usd:
        entries.append(
            books.ledger_entry_book(
                kind=LedgerEntry.Kind.FEE,
                quantity=-execution.fee_usd,
                value_usd=-execution.fee_usd,
                reference=f"execution:{execution.pk}:fee",
                **common,
            )
        )
    proposal.executed_notional_usd += execution.cost_usd
    events.execution_recorded_event(execution=execution, entries=entries)
    if close or proposal.remaining_usd == 0:
        _mark_executed(proposal, actor, reason="closed with the fill" if close else "fully filled")
    proposal.save(update_fields=["executed_notional_usd", "state", "updated_at"])
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
        if proposal.executed_notional_usd == 0:
            raise InvalidTransition(
                "Nothing has been executed; let the approval expire or have the author withdraw."
            )
        with localcontext(prec=EXACT_DIGITS):
            _mark_executed(proposal, actor, reason=reason or "closed by the treasury")
        proposal.save(update_fields=["state", "updated_at"])
    return proposal
