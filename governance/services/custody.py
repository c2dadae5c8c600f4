"""Custody accounts: where a fund keeps its coins, changed only by two fund administrators.

One fund administrator (``manage_policy``) asks to add an account or to change one
(``custody_change_request``); another confirms it with a fresh one-time code from their own
authenticator (``custody_change_confirm``); nobody confirms their own request. A confirmed
account, new or changed, is usable by operations only after the fund's cooling-off period
(``Fund.custody_cooling_off_hours``, part of the mandate, so itself set by two administrators):
a payout address swapped by one compromised administrator, or by two who were deceived, can still
be stopped before any coin moves to it. Removing an account is immediate and needs one
administrator (``custody_account_remove``): it only narrows where coins may go.

Every write here locks the fund first (``_locks``), so one fund's custody writes run one at a
time and read the cooling-off the last published policy set.
"""

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import events, permissions
from governance.exceptions import InvalidTransition
from governance.models import CustodyAccountChange
from governance.second_factor import second_factor_confirm
from governance.services._locks import lock_custody_account, lock_custody_change, lock_fund
from portfolio.addresses import address_normalise, address_refusal
from portfolio.models import CustodyAccount, Fund
from portfolio.text import refuse_hidden_characters

Action = CustodyAccountChange.Action
State = CustodyAccountChange.State
TERMS = ("name", "kind", "chain", "address", "account_reference")


def _terms(source) -> dict:
    return {field: getattr(source, field) for field in TERMS}


def _clean_terms(*, name, kind, chain, address, account_reference, reason) -> dict:
    """The terms as they will be stored, or a ``ValidationError`` naming each bad field."""
    terms = {
        "name": name.strip(),
        "kind": kind,
        "chain": chain.strip(),
        "address": address.strip(),
        "account_reference": account_reference.strip(),
    }
    reason = reason.strip()
    refuse_hidden_characters(**{k: v for k, v in terms.items() if k != "kind"}, reason=reason)
    errors = {}
    for field, value in (*terms.items(), ("reason", reason)):
        limit = CustodyAccountChange._meta.get_field(field).max_length
        if len(value) > limit:
            errors[field] = f"At most {limit} characters."
    if not terms["name"]:
        errors["name"] = "Name the account."
    if kind not in CustodyAccount.Kind.values:
        errors["kind"] = f"Unknown kind of account {kind!r}."
    if not terms["chain"]:
        errors["chain"] = "Name the chain the account is on, as the assets name it."
    if not reason:
        errors["reason"] = "Say why the account is added or changed."
    if not terms["address"] and not terms["account_reference"]:
        errors["address"] = "Give the account's address or its reference at the custodian."
    elif kind == CustodyAccount.Kind.COLD_MULTISIG and not terms["address"]:
        errors["address"] = "A cold multisig wallet is known by its on-chain address."
    elif why := address_refusal(terms["chain"], terms["address"]):
        errors["address"] = why
    if errors:
        raise ValidationError(errors)
    terms["address"] = address_normalise(terms["chain"], terms["address"])
    return {**terms, "reason": reason}


def _terms_conflict(fund: Fund, terms: dict, *, account: CustodyAccount | None) -> None:
    """Refuse a name the fund already uses, or an address that is an active account's (of any
    fund): ``ValidationError`` naming the field. Checked on request and again on confirmation,
    under the fund's lock; the database's unique constraints back both."""
    others = CustodyAccount.objects.exclude(pk=account.pk if account else None)
    if others.filter(fund=fund, name__iexact=terms["name"]).exists():
        raise ValidationError({"name": f"The fund already has an account named {terms['name']}."})
    if (
        terms["address"]
        and (
            others.filter(
                active=True, chain__iexact=terms["chain"], address__iexact=terms["address"]
            )
        ).exists()
    ):
        raise ValidationError(
            {"address": f"This address is already an active custody account's on {terms['chain']}."}
        )


def custody_change_request(
    *,
    actor,
    fund: Fund,
    action: str,
    name: str,
    kind: str,
    chain: str,
    address: str = "",
    account_reference: str = "",
    reason: str,
    account: CustodyAccount | None = None,
) -> CustodyAccountChange:
    """Ask to add a custody account to ``fund`` or to change one of its accounts; it waits for a
    second fund administrator.

    Preconditions: ``actor`` holds ``manage_policy`` on the fund; ``action`` is ``add`` (no
    account) or ``change`` (an active account of the fund, with no other change waiting, and
    terms that differ from its own); the name, chain and reason are given and free of hidden
    characters; an address or an account reference is given (an address for a cold multisig),
    the address has its chain's shape and checksum; no other account of the fund has the name
    and no active account of any fund has the address. Holds the fund's lock, then the
    account's.
    Effects: a pending ``CustodyAccountChange``; audit ``custody.change_requested``. No account
    changes until it is confirmed.
    """
    permissions.raise_if_refused(permissions.fund_admin_refusal(actor, fund))
    if action not in Action.values:
        raise ValidationError({"action": f"Unknown action {action!r}: add or change."})
    if (action == Action.CHANGE) != (account is not None):
        raise ValidationError({"account": "A change names the account; an addition does not."})
    terms = _clean_terms(
        name=name,
        kind=kind,
        chain=chain,
        address=address,
        account_reference=account_reference,
        reason=reason,
    )
    with transaction.atomic():
        lock_fund(fund)
        before = None
        if account is not None:
            account = lock_custody_account(account.pk)
            if account.fund_id != fund.pk:
                raise ValidationError({"account": "The account is another fund's."})
            if not account.active:
                raise InvalidTransition(f"{account} was removed; add a new account instead.")
            before = _terms(account)
            if before == {field: terms[field] for field in TERMS}:
                raise InvalidTransition(f"{account} already has these terms.")
        _terms_conflict(fund, terms, account=account)
        try:
            with transaction.atomic():
                change = CustodyAccountChange.objects.create(
                    fund=fund,
                    action=action,
                    account=account,
                    **terms,
                    requested_by=actor,
                    requested_at=timezone.now(),
                )
        except IntegrityError as exc:
            raise InvalidTransition(
                f"A change to {account} is already waiting for a second administrator; confirm "
                "or cancel it first."
            ) from exc
        events.custody_change_requested_event(change=change, before=before)
    return change


def _lock_change(change_id: int) -> CustodyAccountChange:
    """Lock a change's fund, its account (if any) and the change, in the order of ``_locks``."""
    ids = CustodyAccountChange.objects.values("fund_id", "account_id").get(pk=change_id)
    lock_fund(Fund(pk=ids["fund_id"]))
    if ids["account_id"] is not None:
        lock_custody_account(ids["account_id"])
    return lock_custody_change(change_id)


def custody_change_confirm(*, actor, change_id: int, otp_token: str | None) -> CustodyAccountChange:
    """Confirm a pending custody account change as the second fund administrator.

    Preconditions (``permissions.custody_change_confirm_refusal``): ``actor`` holds
    ``manage_policy`` on the fund and did not ask for the change (four eyes); the change is
    pending; its name and address are still free; ``otp_token`` is a fresh code from the actor's
    own authenticator (a new payout address is the classic attack, so the confirmer proves they
    are at the keyboard). Holds the fund's lock, the account's, then the change's: a second
    confirmation waits and is refused as no longer pending.
    Effects: for ``add``, a new active account; for ``change``, the account's terms replaced.
    Either way the account is usable from now plus the fund's cooling-off period (a changed
    account cools off again). The change is applied (``decided_by/at``); audit
    ``custody.change_confirmed`` with the account's terms, ``usable_from`` and the confirmer's
    device.
    """
    with transaction.atomic():
        change = _lock_change(change_id)
        permissions.raise_if_refused(permissions.custody_change_confirm_refusal(actor, change))
        terms = _terms(change)
        _terms_conflict(change.fund, terms, account=change.account)
        device = second_factor_confirm(user=actor, otp_token=otp_token)
        now = timezone.now()
        usable_from = now + dt.timedelta(hours=change.fund.custody_cooling_off_hours)
        if change.action == Action.ADD:
            before = None
            try:
                with transaction.atomic():
                    account = CustodyAccount.objects.create(
                        fund=change.fund, **terms, created_at=now, usable_from=usable_from
                    )
            except IntegrityError as exc:
                raise InvalidTransition(
                    "Another account took this name or address meanwhile; cancel this change."
                ) from exc
            change.account = account
        else:
            account = change.account
            if not account.active:  # removal cancels pending changes; never reached in order
                raise InvalidTransition(f"{account} was removed.")
            before = _terms(account)
            for field, value in terms.items():
                setattr(account, field, value)
            account.usable_from = usable_from
            try:
                with transaction.atomic():
                    account.save(update_fields=[*TERMS, "usable_from"])
            except IntegrityError as exc:
                raise InvalidTransition(
                    "Another account took this name or address meanwhile; cancel this change."
                ) from exc
        change.state = State.APPLIED
        change.decided_by = actor
        change.decided_at = now
        change.confirmed_by_device = device
        change.save(
            update_fields=["account", "state", "decided_by", "decided_at", "confirmed_by_device"]
        )
        events.custody_change_confirmed_event(
            change=change, account=account, before=before, device=device
        )
    return change


def custody_change_cancel(*, actor, change_id: int) -> CustodyAccountChange:
    """Cancel a pending custody account change; one fund administrator suffices, the requester
    or another (cancelling only keeps things as they are).

    Preconditions (``permissions.custody_change_cancel_refusal``): ``actor`` holds
    ``manage_policy`` on the fund; the change is pending. Holds the fund's, the account's and the
    change's locks.
    Effects: the change is cancelled (``decided_by/at``); audit ``custody.change_cancelled``.
    """
    with transaction.atomic():
        change = _lock_change(change_id)
        permissions.raise_if_refused(permissions.custody_change_cancel_refusal(actor, change))
        change.state = State.CANCELLED
        change.decided_by = actor
        change.decided_at = timezone.now()
        change.save(update_fields=["state", "decided_by", "decided_at"])
        events.custody_change_cancelled_event(change=change)
    return change


def custody_account_remove(*, actor, account_id: int, reason: str) -> CustodyAccount:
    """Remove a custody account at once; one fund administrator suffices.

    Removing only narrows where the fund's coins may go, so, like revoking a role, it needs no
    second person and waits for nothing: an account suspected of compromise stops being usable
    the moment one administrator says so. It is final: to use the account again, add it anew
    (two administrators, cooling off).

    Preconditions: ``actor`` holds ``manage_policy`` on the account's fund; the account is
    active; ``reason`` says why. Holds the fund's lock, then the account's.
    Effects: ``active`` false and ``removed_at`` now; the account's pending changes are
    cancelled (each audited ``custody.change_cancelled``); audit ``custody.account_removed``.
    """
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the account is removed."})
    refuse_hidden_characters(reason=reason)
    fund_id = CustodyAccount.objects.values_list("fund_id", flat=True).get(pk=account_id)
    with transaction.atomic():
        lock_fund(Fund(pk=fund_id))
        account = lock_custody_account(account_id)
        permissions.raise_if_refused(permissions.fund_admin_refusal(actor, account.fund))
        if not account.active:
            raise InvalidTransition(f"{account} is already removed.")
        now = timezone.now()
        account.active = False
        account.removed_at = now
        account.save(update_fields=["active", "removed_at"])
        pending = []
        for change_id in account.changes.filter(state=State.PENDING).values_list("pk", flat=True):
            change = lock_custody_change(change_id)
            change.state = State.CANCELLED
            change.decided_by = actor
            change.decided_at = now
            change.save(update_fields=["state", "decided_by", "decided_at"])
            pending.append(change)
        events.custody_account_removed_event(
            actor=actor, account=account, reason=reason, cancelled=[c.pk for c in pending]
        )
        for change in pending:
            events.custody_change_cancelled_event(change=change, reason="account_removed")
    return account
