"""Prices a site administrator enters by hand, on the record."""

import datetime as dt
from decimal import Decimal

from django.db import transaction

from governance import events
from governance.exceptions import NotPermitted
from portfolio.models import Asset, Price
from portfolio.prices.services import price_record_manual


def price_enter_manual(
    *, actor, asset: Asset, price: Decimal, observed_at: dt.datetime | None = None
) -> Price:
    """Enter a USD price an administrator read elsewhere (e.g. while a provider is down).

    Preconditions: ``actor`` is a site administrator. The price counts as one more source in the
    consensus, so on its own it never makes a price usable (it is ``single_source``).
    Effects: a ``Price`` with source ``manual`` signed by ``actor``; audit
    ``price.entered_manually``. An invalid price raises ``ManualPriceInvalid``, storing nothing.
    """
    if not (actor.is_active and actor.is_superuser):
        raise NotPermitted("Only a site administrator may enter a manual price.")
    with transaction.atomic():
        row = price_record_manual(
            asset=asset, price=price, entered_by=actor, observed_at=observed_at
        )
        events.price_entered_manually_event(actor=actor, price=row)
    return row
