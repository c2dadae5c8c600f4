"""A fund's mandate: the limits pre-trade compliance and the executions hold it to, and how long
a new custody account cools off. Set only by publishing an approval policy version that carries
it, so always by two administrators (rule 14)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError

from portfolio.models import Fund

# Hours a custody account may be made to wait at most: a month.
MAX_COOLING_OFF_HOURS = 720


@dataclass(frozen=True)
class Mandate:
    """A fund's mandate, as a fund or an approval policy version carries it."""

    max_asset_share: Decimal
    max_proposal_notional_usd: Decimal
    execution_window_days: int
    price_tolerance: Decimal
    max_fee_share: Decimal
    custody_cooling_off_hours: int

    @classmethod
    def of(cls, source) -> Mandate:
        """The mandate of a fund or of an approval policy version."""
        return cls(*(getattr(source, field) for field in Fund.MANDATE))

    def validate(self) -> None:
        """The ranges the fund's database checks hold, refused here with the field named."""
        errors = {}
        if not 0 < self.max_asset_share <= 1:
            errors["max_asset_share"] = "The largest share of one asset is above 0 and at most 1."
        if not self.max_proposal_notional_usd > 0:
            errors["max_proposal_notional_usd"] = "The single-proposal limit must be positive."
        if not self.execution_window_days >= 1:
            errors["execution_window_days"] = "The execution window is at least one day."
        if not 0 < self.price_tolerance < 1:
            errors["price_tolerance"] = "The price tolerance is above 0 and below 1."
        if not 0 <= self.max_fee_share < 1:
            errors["max_fee_share"] = "The fee share is at least 0 and below 1."
        if not 0 <= self.custody_cooling_off_hours <= MAX_COOLING_OFF_HOURS:
            errors["custody_cooling_off_hours"] = (
                f"The cooling-off period is 0 to {MAX_COOLING_OFF_HOURS} hours."
            )
        if errors:
            raise ValidationError(errors)

    def as_json(self) -> dict:
        return {field: str(value) for field, value in vars(self).items()}
