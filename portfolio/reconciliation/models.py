"""What the reconciliation saw and what it found: balances observed in custody accounts, the
breaks a difference from the ledger opened, and the record of each periodic run.

Part of the portfolio app (tables ``portfolio_*``), imported by ``portfolio.models``. Nothing
here writes the ledger: a break is explained by people, never corrected by Alem.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from portfolio.constraints import check, unique
from portfolio.fields import AmountField, QuantityField


class BalanceObservation(models.Model):
    """One balance of one asset in one custody account, as the chain or a statement gave it,
    beside the ledger's balance of that account and asset at the moment it was compared."""

    class Source(models.TextChoices):
        CHAIN = "chain", _("Read on chain")
        STATEMENT = "statement", _("Statement uploaded by a treasury operator")

    account = models.ForeignKey(
        "portfolio.CustodyAccount", on_delete=models.PROTECT, related_name="observations"
    )
    asset = models.ForeignKey("portfolio.Asset", on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=16, choices=Source.choices)
    observed_quantity = QuantityField(help_text=_("The balance the chain or statement gave."))
    ledger_quantity = AmountField(
        help_text=_(
            "The ledger's balance of the account: now for a chain reading, at the statement's "
            "date for a statement."
        )
    )
    difference = AmountField(help_text=_("Observed minus ledger."))
    observed_at = models.DateTimeField(
        help_text=_("When the chain was read, or the moment the statement's balance is as of.")
    )
    recorded_at = models.DateTimeField()
    block_number = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text=_(
            "The block the balance was read at (EVM chains), or the chain's tip just before "
            "the reading (Bitcoin)."
        ),
    )
    statement_reference = models.CharField(
        max_length=300,
        blank=True,
        help_text=_("The statement's file name and the start of its SHA-256."),
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_("Who uploaded the statement; empty for a chain reading."),
    )

    class Meta:
        ordering = ["-observed_at", "-id"]
        indexes = [models.Index(fields=["account", "asset", "-id"])]
        constraints = [
            check(Q(observed_quantity__gte=0), what="observed_not_negative"),
            check(
                Q(difference=F("observed_quantity") - F("ledger_quantity")),
                what="difference_observed_minus_ledger",
            ),
            check(
                Q(source="chain", recorded_by__isnull=True, statement_reference="")
                | Q(source="statement", recorded_by__isnull=False) & ~Q(statement_reference=""),
                what="statement_has_uploader",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.observed_quantity} {self.asset} in {self.account} ({self.source})"


class ReconciliationBreak(models.Model):
    """A difference beyond dust between an account's observed balance and the ledger's.

    Opened by the observation that found it, visible to the fund's auditors and administrators
    until someone explains it (an auditor's comment, or a linked proposal); explaining closes it.
    Never closed by a later observation, and never corrected: the ledger changes only through
    the fund's own operations.
    """

    class State(models.TextChoices):
        OPEN = "open", _("Open: waits for an explanation")
        EXPLAINED = "explained", _("Explained: closed by a comment or a linked proposal")

    account = models.ForeignKey(
        "portfolio.CustodyAccount", on_delete=models.PROTECT, related_name="breaks"
    )
    asset = models.ForeignKey("portfolio.Asset", on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    opened_at = models.DateTimeField()
    observation = models.OneToOneField(
        BalanceObservation,
        on_delete=models.PROTECT,
        related_name="opened_break",
        help_text=_("The observation that found the difference."),
    )
    ledger_quantity = AmountField()
    observed_quantity = QuantityField()
    difference = AmountField(help_text=_("Observed minus ledger."))
    explained_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    explained_at = models.DateTimeField(null=True, blank=True)
    explanation = models.TextField(blank=True)
    proposal = models.ForeignKey(
        "governance.Proposal",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reconciliation_breaks",
        help_text=_("The proposal that explains the difference, when one does."),
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            unique(
                "account", "asset", what="one_open_per_account_and_asset", condition=Q(state="open")
            ),
            check(~Q(difference=0), what="difference_nonzero"),
            check(
                Q(difference=F("observed_quantity") - F("ledger_quantity")),
                what="difference_observed_minus_ledger",
            ),
            check(
                Q(
                    state="open",
                    explained_by__isnull=True,
                    explained_at__isnull=True,
                    explanation="",
                    proposal__isnull=True,
                )
                | Q(state="explained", explained_by__isnull=False, explained_at__isnull=False)
                & (~Q(explanation="") | Q(proposal__isnull=False)),
                what="explained_has_who_and_why",
            ),
            check(
                Q(explained_at__isnull=True) | Q(explained_at__gte=F("opened_at")),
                what="explained_after_opened",
            ),
        ]

    def __str__(self) -> str:
        return f"Break of {self.difference} {self.asset} in {self.account} ({self.state})"


class ReconciliationRun(models.Model):
    """One periodic run over every custody address: what it read, what it could not, and why.

    ``skipped`` lists ``{"account", "account_name", "chain", "asset", "reason"}`` for each
    account or asset not read (no node configured, no reader for the asset); ``failures`` the
    same with ``error`` for each reading that failed (a node down, a malformed answer): neither
    ever opens a break.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    observed = models.PositiveIntegerField(default=0)
    breaks_opened = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=list, blank=True)
    failures = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [check(Q(finished_at__gte=F("started_at")), what="finishes_after_start")]

    def __str__(self) -> str:
        return f"Reconciliation run at {self.started_at:%Y-%m-%d %H:%M}"
