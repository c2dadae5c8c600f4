"""Opening balances: what a fund held before Alem kept its books, booked by the system alone.

Every contribution since is an approved intake proposal (rule 15); no person books one directly.
"""

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from governance import events
from portfolio import services as books
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, LedgerEntry


def opening_balance_record(
    *,
    fund: Fund,
    funding_source: FundingSource,
    amount_usd: Decimal,
    asset: Asset | None = None,
    quantity: Decimal | None = None,
    account: CustodyAccount | None = None,
    memo: str = "",
    booked_at: dt.datetime | None = None,
) -> LedgerEntry:
    """Book an opening balance of cash (``asset=None``) or of an asset, in ``account``.

    For the command line and the demo seed only: the system books it (the event has no actor),
    no page, API or admin form calls it. ``amount_usd`` is the cash amount, or the value of the
    asset when it was taken on (its cost basis).
    Preconditions: the funding source and the account belong to the fund; quantities positive.
    Effects: one ledger entry of kind ``contribution``; audit event ``contribution.recorded``
    marked ``opening``.
    """
    if funding_source.fund_id != fund.pk:
        raise ValidationError({"funding_source": "This funding source belongs to another fund."})
    if account is not None and account.fund_id != fund.pk:
        raise ValidationError({"account": "This custody account belongs to another fund."})
    if asset is None:
        quantity = amount_usd
    if quantity is None or quantity <= 0 or amount_usd < 0 or (asset is None and amount_usd <= 0):
        raise ValidationError({"quantity": "An opening balance must be positive."})
    with transaction.atomic():
        entry = books.ledger_entry_book(
            fund=fund,
            kind=LedgerEntry.Kind.CONTRIBUTION,
            asset=asset,
            account=account if asset is not None else None,
            quantity=quantity,
            value_usd=amount_usd,
            funding_source=funding_source,
            memo=memo,
            booked_at=booked_at,
        )
        events.contribution_recorded_event(actor=None, entry=entry, memo=memo, opening=True)
    return entry
