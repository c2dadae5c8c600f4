"""Market data: observed prices, official rates, and the fetch runs that brought them.

Models of the ``portfolio`` app (``portfolio.models`` imports them), kept with the code that
writes them (``portfolio.prices.services``) and reads them (``portfolio.prices.selectors``).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portfolio.constraints import check, unique
from portfolio.fields import PriceField


class Price(models.Model):
    """One observed price of an asset from one source."""

    class Source(models.TextChoices):
        BINANCE = "binance", _("Binance")
        COINGECKO = "coingecko", _("CoinGecko")
        YAHOO = "yahoo", _("Yahoo Finance daily close (history)")
        MANUAL = "manual", _("Entered by an administrator")
        NBK = "nbk", _("Peg through the National Bank of Kazakhstan's official rate")

    asset = models.ForeignKey("portfolio.Asset", on_delete=models.PROTECT, related_name="prices")
    source = models.CharField(max_length=16, choices=Source.choices)
    quote_currency = models.CharField(max_length=8, default="USD")
    price = PriceField()
    observed_at = models.DateTimeField()
    fetched_at = models.DateTimeField(auto_now_add=True)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-observed_at"]
        indexes = [
            models.Index(fields=["asset", "-observed_at"]),
            # The newest price of each source (consensus): one index probe per source, however
            # old one source's newest price is next to the others'.
            models.Index(
                fields=["asset", "source", "-observed_at", "-id"], name="price_newest_by_source"
            ),
        ]
        constraints = [
            unique("asset", "source", "quote_currency", "observed_at", what="unique_observation"),
            check(Q(price__gt=0), what="price_positive"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.asset} {self.price} {self.quote_currency} ({self.source}, {self.observed_at})"
        )


class FxRate(models.Model):
    """An official exchange rate of the day: how many ``quote`` for one ``base``."""

    base_currency = models.CharField(max_length=3, default="USD")
    quote_currency = models.CharField(max_length=3, default="KZT")
    rate = PriceField()
    date = models.DateField()
    source = models.CharField(max_length=32, default="nbk")

    class Meta:
        ordering = ["-date"]
        constraints = [
            unique("base_currency", "quote_currency", "date", what="unique_rate_per_day"),
            check(Q(rate__gt=0), what="rate_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.base_currency}/{self.quote_currency} {self.rate} on {self.date}"


# ---------------------------------------------------------------------------------------------
# Fetch runs: what each provider was asked, what came back, and why not
# ---------------------------------------------------------------------------------------------


class MarketDataProvider(models.TextChoices):
    """A market-data API the fetch tasks call."""

    BINANCE = "binance", _("Binance")
    COINGECKO = "coingecko", _("CoinGecko")
    NBK = "nbk", _("National Bank of Kazakhstan")


class PriceFetch(models.Model):
    """One run against one provider: latest quotes or history. At most one runs at a time per
    provider and kind; the row marked ``running`` is the lock."""

    class Kind(models.TextChoices):
        LATEST = "latest", _("Latest quotes")
        HISTORY = "history", _("Daily history (backfill)")

    class Outcome(models.TextChoices):
        RUNNING = "running", _("Running: holds the lock of its provider and kind")
        OK = "ok", _("Every requested asset was priced")
        PARTIAL = "partial", _("Some requested assets were priced, others failed")
        FAILED = "failed", _("Nothing was stored")
        SKIPPED = "skipped", _("Not attempted: the provider asked us to wait (Retry-After)")
        ABANDONED = "abandoned", _("Its worker died; the lock was taken over after the lease")

    provider = models.CharField(max_length=16, choices=MarketDataProvider.choices)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LATEST)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    requested = models.JSONField(
        default=list, blank=True, help_text=_("Provider ids asked for, e.g. BNBUSDT.")
    )
    stored = models.PositiveIntegerField(default=0, help_text=_("Prices or rates stored."))
    attempts = models.PositiveSmallIntegerField(default=0, help_text=_("HTTP requests made."))
    detail = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["provider", "kind", "-started_at"])]
        constraints = [
            unique(
                "provider", "kind", what="one_running_per_provider", condition=Q(outcome="running")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} {self.kind} {self.started_at:%Y-%m-%d %H:%M:%S}"


class FetchFailure(models.Model):
    """Why a fetch, or one asset in it, failed. Nothing that failed is stored as a price.

    ``paused_until`` set means the provider asked us to stay away (HTTP 429 or 418 with
    Retry-After): no fetch calls it before then.
    """

    class Reason(models.TextChoices):
        TIMEOUT = "timeout", _("No answer within the timeout")
        CONNECTION = "connection", _("Could not connect")
        SERVER_ERROR = "server_error", _("HTTP 5xx from the provider")
        RATE_LIMITED = "rate_limited", _("HTTP 429: too many requests")
        BANNED = "banned", _("HTTP 418: address banned until Retry-After")
        HTTP_ERROR = "http_error", _("Another HTTP error status")
        MALFORMED = "malformed", _("The body could not be read as the documented format")
        UNKNOWN_SYMBOL = "unknown_symbol", _("The provider does not know the asset")
        NO_RATES = "no_rates", _("The National Bank published no rate for the day")
        INTERNAL_ERROR = "internal_error", _("A fault in Alem while fetching")

    fetch = models.ForeignKey(PriceFetch, on_delete=models.CASCADE, related_name="failures")
    provider = models.CharField(max_length=16, choices=MarketDataProvider.choices)
    asset = models.ForeignKey(
        "portfolio.Asset",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_("Empty when the whole request failed."),
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    paused_until = models.DateTimeField(null=True, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["provider", "-paused_until"]),
            models.Index(fields=["-occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()}: {self.get_reason_display()}"
