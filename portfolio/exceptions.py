"""Domain errors of the portfolio app."""


class PortfolioError(Exception):
    """A bookkeeping rule was broken; the API answers 409 with ``code``."""

    code = "portfolio_error"
    status_code = 409

    def __init__(self, detail: str, *, context: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.context = context or {}


class PriceImportError(PortfolioError):
    """A price file could not be read; nothing from it was stored."""

    code = "price_import_invalid"


class BreakNotOpen(PortfolioError):
    """A reconciliation break is already explained; it cannot be explained again."""

    code = "break_not_open"
