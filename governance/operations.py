"""What each kind of operation takes (rule 15): pure, over plain values and loaded rows.

A proposal's terms differ by kind; ``TERMS`` names the ones each kind needs and may carry, and
``terms_problems`` says what is wrong with a set of terms, field by field, before anything is
written. ``account_problems`` is what makes a custody account unfit for an operation at a given
moment; compliance blocks on it at submission and final approval and the executions refuse on it.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from governance.models import OperationKind
from portfolio.models import CustodyAccount, same_chain

K = OperationKind


@dataclass(frozen=True)
class Terms:
    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional


TERMS: dict[str, Terms] = {
    K.BUY: Terms(
        frozenset({"asset", "notional_usd", "limit_price_usd", "funding_source"}),
        frozenset({"account"}),
    ),
    K.SELL: Terms(frozenset({"asset", "quantity", "limit_price_usd", "account"})),
    K.TRANSFER: Terms(frozenset({"asset", "quantity", "account", "destination_account"})),
    K.INTAKE: Terms(
        frozenset({"quantity", "funding_source", "document_reference"}),
        frozenset({"asset", "account"}),
    ),
}

# Every term some kind takes, with the empty value of a term a kind does not take.
EMPTY = {
    "asset": None,
    "notional_usd": None,
    "limit_price_usd": None,
    "quantity": None,
    "account": None,
    "destination_account": None,
    "funding_source": None,
    "document_reference": "",
}

_LABELS = {
    K.BUY: "a buy",
    K.SELL: "a sale",
    K.TRANSFER: "a transfer",
    K.INTAKE: "an intake",
}


def _empty(value) -> bool:
    return value is None or value == ""


def terms_problems(kind: str, terms: dict, *, fund_id: int) -> dict[str, str]:
    """What is wrong with a proposal's complete ``terms`` for ``kind``, by field (empty when
    nothing is): a term the kind needs and lacks, one it does not take, a quantity or price
    that is not positive, an account or funding source of another fund, an account on another
    chain than the asset, a transfer to the account it leaves from or to another chain, and an
    intake of coins without the account they go to."""
    if kind not in TERMS:
        return {"kind": f"{kind!r} is not a kind of operation."}
    spec, what = TERMS[kind], _LABELS[kind]
    problems = {}
    for name in EMPTY:
        value = terms.get(name)
        if name in spec.required and _empty(value):
            problems[name] = f"Required for {what}."
        elif name not in spec.allowed and not _empty(value):
            problems[name] = f"Not a term of {what}."
    for name in ("notional_usd", "limit_price_usd", "quantity"):
        value = terms.get(name)
        if name not in problems and value is not None and not value > 0:
            problems[name] = "Must be greater than zero."
    asset, account = terms.get("asset"), terms.get("account")
    destination = terms.get("destination_account")
    source = terms.get("funding_source")
    if source is not None and source.fund_id != fund_id:
        problems["funding_source"] = "This funding source belongs to another fund."
    for name, named in (("account", account), ("destination_account", destination)):
        if named is None or name in problems:
            continue
        if named.fund_id != fund_id:
            problems[name] = "This custody account belongs to another fund."
        elif asset is not None and not same_chain(named.chain, asset.chain):
            problems[name] = (
                f"This account is on {named.chain}; {asset.symbol} is on {asset.chain}."
            )
    if kind == K.TRANSFER and account and destination and "destination_account" not in problems:
        if destination.pk == account.pk:
            problems["destination_account"] = "A transfer goes to another account."
        elif not same_chain(destination.chain, account.chain):
            problems["destination_account"] = "A transfer stays on one chain."
    if kind == K.INTAKE and asset is not None and account is None:
        problems["account"] = "An intake of coins names the custody account they go to."
    if kind == K.INTAKE and asset is None and account is not None:
        problems["account"] = "US dollars are not kept in a custody account."
    return problems


def account_problems(proposal, *, now: dt.datetime) -> list[str]:
    """Why the custody accounts ``proposal`` names cannot be used at ``now``: removed, or still
    cooling off after they were added or changed (empty when they can)."""
    problems = []
    for role, account in (("", proposal.account), ("destination ", proposal.destination_account)):
        if account is None:
            continue
        if not account.active:
            problems.append(f"The {role}account {account.name} was removed.")
        elif account.usable_from > now:
            problems.append(
                f"The {role}account {account.name} is cooling off until "
                f"{account.usable_from:%Y-%m-%d %H:%M %Z}."
            )
    return problems


def value_at(quantity: Decimal, price_usd: Decimal) -> Decimal:
    """A quantity's value in whole cents, rounded up: the notional a sale, transfer or intake is
    judged by (policy thresholds and the single-proposal limit), never below one cent."""
    cents = (quantity * price_usd).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
    return max(cents, Decimal("0.01"))


def accounts_of(proposal) -> list[CustodyAccount]:
    """The custody accounts the proposal names, in id order (the order they are locked in)."""
    named = {a.pk: a for a in (proposal.account, proposal.destination_account) if a is not None}
    return [named[pk] for pk in sorted(named)]
