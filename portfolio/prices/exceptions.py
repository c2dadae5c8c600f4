"""Domain errors of market data."""

from portfolio.exceptions import PortfolioError


class ManualPriceInvalid(PortfolioError):
    """A manual price was refused (not positive, too precise, in the future, or already
    recorded for that moment); nothing was stored."""

    code = "manual_price_invalid"
