"""Money and assets arriving in a fund from its funding sources."""

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from governance import events
from governance.exceptions import NotPermitted
from governance.roles import has_role
from portfolio import services as books
from portfolio.models import Asset, Fund, FundingSource, FundRole, LedgerEntry


def contribution_record(
    *,
    actor,
    fund: Fund,
    funding_source: FundingSource,
    amount_usd: Decimal,
    asset: Asset | None = None,
    quantity: Decimal | None = None,
    memo: str = "",
    booked_at: dt.datetime | None = None,
) -> LedgerEntry:
    """Book a contribution of cash (``asset=None``) or of an asset in kind.

    ``amount_usd`` is the cash amount, or the value of the asset at contribution (its cost basis).
    Preconditions: ``actor`` holds ``manage_policy`` on the fund (``None`` is the system, used by
    the demo seed); the funding source belongs to the fund.
    Effects: one ledger entry; audit event ``contribution.recorded``.
    """
    if actor is not None and not has_role(actor, fund, FundRole.MANAGE_POLICY):
        raise NotPermitted("Recording a contribution needs the manage_policy role on the fund.")
    if funding_source.fund_id != fund.pk:
        raise ValidationError({"funding_source": "This funding source belongs to another fund."})
    if asset is None:
        quantity = amount_usd
    if quantity is None or quantity <= 0 or amount_usd < 0 or (asset is None and amount_usd <= 0):
        raise ValidationError({"quantity": "A contribution must be positive."})
    with transaction.atomic():
        entry = books.ledger_entry_book(
            fund=fund,
            kind=LedgerEntry.Kind.CONTRIBUTION,
            asset=asset,
            quantity=quantity,
            value_usd=amount_usd,
            funding_source=funding_source,
            memo=memo,
            booked_at=booked_at,
            booked_by=actor,
        )
        events.contribution_recorded_event(actor=actor, entry=entry, memo=memo)
    return entry
