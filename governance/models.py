"""Proposals, the approval policies that govern them, decisions and the audit log."""

from decimal import Decimal, localcontext

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Lower
from django.utils.translation import gettext_lazy as _

from governance.vocabulary import AuditAction
from portfolio.constraints import PREFIX, check, unique
from portfolio.fields import (
    EXACT_DIGITS,
    AmountField,
    MoneyField,
    PriceField,
    QuantityField,
    RatioField,
)
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, FundRole
from portfolio.text import reject_hidden_characters

# The roles that decide at a policy stage.
DECIDING_ROLES = (FundRole.REVIEW_RISK, FundRole.VOTE_COMMITTEE, FundRole.APPROVE_MINISTRY)


# An on-chain transaction's hash: 64 hex digits, 0x first on EVM chains, bare on Bitcoin.
TX_HASH = r"^(0x)?[0-9a-fA-F]{64}$"


class ApprovalPolicy(models.Model):
    """A numbered version of a fund's approval policy.

    A version is drafted by one fund administrator and published by another; once published it
    never changes, and the newest published version is the one in force.
    """

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="policies")
    version = models.PositiveIntegerField()
    note = models.CharField(max_length=500, blank=True)
    drafted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    drafted_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    # The fund's public disclosure as of this version, copied onto the fund when it is published.
    disclose_holdings = models.BooleanField(default=False)
    disclosure_delay_days = models.PositiveSmallIntegerField(default=30)
    disclose_deciders = models.BooleanField(default=False)
    # The fund's mandate limits as of this version (``Fund.MANDATE``), copied onto the fund when
    # it is published: they change only with two administrators.
    max_asset_share = RatioField()
    max_proposal_notional_usd = MoneyField()
    execution_window_days = models.PositiveSmallIntegerField()
    price_tolerance = RatioField()
    max_fee_share = RatioField()
    custody_cooling_off_hours = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["fund", "-version"]
        verbose_name_plural = "approval policies"
        constraints = [
            unique("fund", "version", what="unique_version"),
            check(Q(version__gte=1), what="version_positive"),
            # Four eyes: whoever drafts a policy cannot also put it in force.
            check(
                Q(published_by__isnull=True) | ~Q(published_by=F("drafted_by")),
                what="publisher_is_not_drafter",
            ),
            check(
                Q(published_by__isnull=True, published_at__isnull=True)
                | Q(published_by__isnull=False, published_at__isnull=False),
                what="published_by_and_at_together",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.fund} policy v{self.version}"

    @property
    def is_published(self) -> bool:
        return self.published_at is not None


class OperationKind(models.TextChoices):
    """What a proposal does to the fund (rule 15): every movement of its assets or cash is one."""

    BUY = "buy", _("Buy")
    SELL = "sell", _("Sell")
    TRANSFER = "transfer", _("Transfer between custody accounts")
    INTAKE = "intake", _("Intake from a funding source")


class PolicyStage(models.Model):
    """One ordered stage of a policy: who decides, how many must approve, from what notional,
    for which kinds of operation (all of them when ``kinds`` is empty)."""

    policy = models.ForeignKey(ApprovalPolicy, on_delete=models.CASCADE, related_name="stages")
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100, validators=[reject_hidden_characters])
    permission = models.CharField(
        max_length=32, choices=[(role.value, role.label) for role in DECIDING_ROLES]
    )
    quorum = models.PositiveSmallIntegerField(default=1)
    applies_from_usd = MoneyField(
        default=0, help_text=_("The stage applies to proposals of at least this notional.")
    )
    kinds = ArrayField(
        models.CharField(max_length=16, choices=OperationKind.choices),
        default=list,
        blank=True,
        help_text=_("The kinds of operation the stage applies to; empty for every kind."),
    )

    class Meta:
        ordering = ["policy", "order"]
        constraints = [
            unique("policy", "order", what="unique_order"),
            check(Q(quorum__gte=1), what="quorum_positive"),
            check(Q(applies_from_usd__gte=0), what="applies_from_not_negative"),
            check(
                Q(permission__in=[role.value for role in DECIDING_ROLES]),
                what="permission_is_deciding_role",
            ),
            check(Q(kinds__contained_by=OperationKind.values), what="kinds_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.order}. {self.name}"


class ProposalState(models.TextChoices):
    DRAFT = "draft", _("Draft: the author is preparing it")
    IN_REVIEW = "in_review", _("In review: the policy's stages are deciding")
    CHANGES_REQUESTED = "changes_requested", _("Changes requested: back with the author")
    APPROVED = "approved", _("Approved: may be executed within the execution window")
    EXECUTED = "executed", _("Executed: fully filled or closed")
    REJECTED = "rejected", _("Rejected at a stage")
    WITHDRAWN = "withdrawn", _("Withdrawn by the author")
    EXPIRED = "expired", _("Expired: not executed within the execution window")


# What an approved proposal may still spend, as SQL: the one expression behind
# ``Proposal.remaining_usd`` wherever a query needs it (sums, annotations, filters).
REMAINING_USD = F("notional_usd") - F("executed_notional_usd")


class ProposalQuerySet(models.QuerySet):
    def remaining_usd_total(self):
        """The notional the proposals may still spend, summed in the database."""
        return self.aggregate(total=models.Sum(REMAINING_USD))["total"] or Decimal("0")


class Proposal(models.Model):
    """A proposed operation on the fund, by ``kind`` (rule 15):

    - ``buy``: spend at most ``notional_usd`` on ``asset`` at no more than ``limit_price_usd``,
      the coins landing in ``account`` (when named);
    - ``sell``: sell at most ``quantity`` of ``asset`` from ``account`` at no less than
      ``limit_price_usd``;
    - ``transfer``: move ``quantity`` of ``asset`` from ``account`` to ``destination_account``
      of the same fund and chain;
    - ``intake``: accept ``quantity`` of ``asset`` (or US dollars, ``asset`` empty) from
      ``funding_source`` into ``account``, on the strength of ``document_reference``.

    For every kind but a buy, ``notional_usd`` is the operation's value at the consensus price,
    set by the services when it is drafted, edited and submitted; policy thresholds and the
    single-proposal limit read it as they read a buy's.
    """

    Kind = OperationKind

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="proposals")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BUY)
    asset = models.ForeignKey(
        Asset,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="proposals",
        help_text=_("Empty only for an intake of US dollars."),
    )
    notional_usd = MoneyField(
        help_text=_("Buy: maximum spend in USD, fees included; otherwise the value at consensus.")
    )
    limit_price_usd = PriceField(
        null=True,
        blank=True,
        help_text=_("Buy: highest unit price the treasury may pay; sell: the lowest it may take."),
    )
    quantity = QuantityField(
        null=True, blank=True, help_text=_("Sell, transfer and intake: how much, in units.")
    )
    executed_quantity = QuantityField(
        default=0, help_text=_("Sell, transfer and intake: units moved so far.")
    )
    account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="proposals",
        help_text=_("Buy and intake: where the coins go; sell and transfer: where they come from."),
    )
    destination_account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incoming_proposals",
        help_text=_("Transfer: where the coins go."),
    )
    document_reference = models.CharField(
        max_length=200,
        blank=True,
        validators=[reject_hidden_characters],
        help_text=_("Intake: the court decision, mining statement or budget order behind it."),
    )
    rationale = models.TextField()
    funding_source = models.ForeignKey(
        FundingSource,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="proposals",
        help_text=_("Buy: the money spent; intake: where the assets come from."),
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="proposals"
    )
    state = models.CharField(
        max_length=20, choices=ProposalState.choices, default=ProposalState.DRAFT
    )
    version = models.PositiveIntegerField(default=1)
    policy = models.ForeignKey(
        ApprovalPolicy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="proposals",
        help_text=_("The policy version in force at the latest submission."),
    )
    current_stage = models.ForeignKey(
        PolicyStage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    compliance = models.JSONField(
        default=dict, blank=True, help_text=_("The latest pre-trade compliance report.")
    )
    executed_notional_usd = AmountField(
        default=0, help_text=_("Total cost of the fills booked so far, fees included.")
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # When the current stage opened (submission, the previous stage's completion or a reopening,
    # as the audit log records it): what the deciders' queue sorts by, kept on the row so the
    # queue does not search the log for each waiting proposal.
    stage_opened_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    approval_expires_at = models.DateTimeField(null=True, blank=True)

    objects = ProposalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["fund", "state"]),
            # The API's list, newest first, a page at a time.
            models.Index(fields=["fund", "-created_at", "-id"], name="proposal_fund_newest"),
        ]
        constraints = [
            check(Q(notional_usd__gt=0), what="notional_positive"),
            check(Q(kind__in=OperationKind.values), what="kind_valid"),
            # What each kind needs, and nothing another kind names.
            check(
                Q(kind__in=["buy", "sell"], limit_price_usd__gt=0)
                | Q(kind__in=["transfer", "intake"], limit_price_usd__isnull=True),
                what="limit_price_by_kind",
            ),
            check(
                Q(kind="buy", quantity__isnull=True) | Q(~Q(kind="buy"), quantity__gt=0),
                what="quantity_by_kind",
            ),
            check(
                Q(executed_quantity__gte=0)
                & (
                    Q(quantity__isnull=True, executed_quantity=0)
                    | Q(executed_quantity__lte=F("quantity"))
                ),
                what="executed_within_quantity",
            ),
            check(Q(asset__isnull=False) | Q(kind="intake"), what="asset_unless_cash_intake"),
            check(
                ~Q(kind__in=["sell", "transfer"]) | Q(account__isnull=False),
                what="sell_and_transfer_name_their_account",
            ),
            check(
                Q(kind="transfer", destination_account__isnull=False)
                & ~Q(destination_account=F("account"))
                | ~Q(kind="transfer") & Q(destination_account__isnull=True),
                what="transfer_names_another_destination",
            ),
            check(
                Q(kind__in=["buy", "intake"], funding_source__isnull=False)
                | Q(kind__in=["sell", "transfer"], funding_source__isnull=True),
                what="funding_source_by_kind",
            ),
            check(~Q(kind="intake") | ~Q(document_reference=""), what="intake_has_document"),
            check(Q(version__gte=1), what="version_positive"),
            check(
                Q(executed_notional_usd__gte=0) & Q(executed_notional_usd__lte=F("notional_usd")),
                what="executed_within_notional",
            ),
            check(Q(state__in=ProposalState.values), what="state_valid"),
            # Only a proposal in review is waiting at a stage.
            check(
                Q(state=ProposalState.IN_REVIEW, current_stage__isnull=False)
                | (~Q(state=ProposalState.IN_REVIEW) & Q(current_stage__isnull=True)),
                what="current_stage_only_in_review",
            ),
            check(
                ~Q(state=ProposalState.APPROVED) | Q(approval_expires_at__isnull=False),
                what="approved_has_expiry",
            ),
        ]

    def __str__(self) -> str:
        what = self.asset or "USD"
        return f"#{self.pk} {self.kind} {what} {self.notional_usd} USD ({self.fund})"

    @property
    def has_fills(self) -> bool:
        """Whether anything of it was executed (every fill adds to one of the two totals)."""
        return self.executed_notional_usd > 0 or self.executed_quantity > 0

    @property
    def moves_units(self) -> bool:
        """Whether it is measured in units (sell, transfer, intake) rather than spend (buy)."""
        return self.kind != OperationKind.BUY

    @property
    def remaining_quantity(self) -> Decimal | None:
        """Units still to move, for a sell, transfer or intake; None for a buy."""
        if self.quantity is None:
            return None
        with localcontext(prec=EXACT_DIGITS):
            return self.quantity - self.executed_quantity

    @property
    def remaining_usd(self) -> Decimal:
        """The approved notional not yet spent: what further fills may still cost, fees
        included (``REMAINING_USD`` in SQL)."""
        with localcontext(prec=EXACT_DIGITS):
            return self.notional_usd - self.executed_notional_usd


class Decision(models.Model):
    """One person's verdict on one version of a proposal at one stage, with what they saw."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", _("Approve")
        REJECT = "reject", _("Reject")
        REQUEST_CHANGES = "request_changes", _("Request changes")

    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="decisions")
    proposal_version = models.PositiveIntegerField()
    stage = models.ForeignKey(PolicyStage, on_delete=models.PROTECT, related_name="decisions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions"
    )
    # Copied from the proposal so the database itself refuses a decision by the author.
    proposal_author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    evidence = models.JSONField(default=dict)
    # The second factor that confirmed it: the persistent id of the user's TOTP device.
    confirmed_by_device = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the approval stopped counting: the decider lost the stage's role or their account
    # while the proposal was still in review, or an earlier stage reopened for that reason.
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            unique(
                "proposal",
                "proposal_version",
                "user",
                what="one_per_user_and_version",
                condition=Q(voided_at__isnull=True),
            ),
            check(~Q(user=F("proposal_author")), what="author_never_decides"),
            check(Q(verdict__in=["approve", "reject", "request_changes"]), what="verdict_valid"),
            check(~Q(confirmed_by_device=""), what="confirmed_by_device"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verdict} #{self.proposal_id} v{self.proposal_version}"

    @property
    def counts(self) -> bool:
        return self.voided_at is None


class AdminChange(models.Model):
    """A widening of who may act, asked for by one site administrator and put into effect only
    when a second one confirms it with their own one-time code (DESIGN rule 14).

    Nobody confirms their own request, nor a change for themself. A confirmed grant of a deciding
    role waits out ``ALEM_ROLE_COOLING_OFF_HOURS`` before it takes effect; until then any site
    administrator may cancel it. Written by ``governance.services.admin_changes`` only.
    """

    class Kind(models.TextChoices):
        ROLE_GRANT = "role_grant", _("Grant a fund role")
        STAFF_GRANT = "staff_grant", _("Give back-office access")
        SUPERUSER_GRANT = "superuser_grant", _("Make a site administrator")
        SECOND_FACTOR_RESET = "second_factor_reset", _("Reset the authenticator")
        REACTIVATION = "reactivation", _("Reactivate the account")

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for a second administrator")
        CONFIRMED = "confirmed", _("Confirmed, cooling off")
        APPLIED = "applied", _("In effect")
        CANCELLED = "cancelled", _("Cancelled")

    OPEN_STATES = (State.PENDING, State.CONFIRMED)

    kind = models.CharField(max_length=32, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="admin_changes",
        help_text=_("The person the change is for."),
    )
    fund = models.ForeignKey(
        Fund, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    role = models.CharField(max_length=32, blank=True, choices=FundRole.choices)
    reason = models.CharField(max_length=500, validators=[reject_hidden_characters])
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # The second factor that confirmed it: the persistent id of the confirmer's TOTP device.
    confirmed_by_device = models.CharField(max_length=100, blank=True)
    effective_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When the change takes effect, once confirmed.")
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # Four eyes: the confirmer is neither the requester nor the person it is for.
            check(
                Q(confirmed_by__isnull=True) | ~Q(confirmed_by=F("requested_by")),
                what="confirmer_is_not_requester",
            ),
            check(
                Q(confirmed_by__isnull=True) | ~Q(confirmed_by=F("user")),
                what="confirmer_is_not_beneficiary",
            ),
            check(
                (Q(kind="role_grant", fund__isnull=False) & ~Q(role=""))
                | (~Q(kind="role_grant") & Q(fund__isnull=True, role="")),
                what="fund_and_role_iff_role_grant",
            ),
            check(
                Q(confirmed_by__isnull=True, confirmed_at__isnull=True, confirmed_by_device="")
                | (
                    Q(confirmed_by__isnull=False, confirmed_at__isnull=False)
                    & ~Q(confirmed_by_device="")
                    & Q(effective_at__isnull=False)
                ),
                what="confirmed_with_device",
            ),
            check(
                Q(state="pending", confirmed_by__isnull=True)
                | Q(state="confirmed", confirmed_by__isnull=False, applied_at__isnull=True)
                | Q(state="applied", confirmed_by__isnull=False, applied_at__isnull=False)
                | Q(state="cancelled", applied_at__isnull=True, cancelled_by__isnull=False),
                what="state_matches_its_record",
            ),
            check(
                Q(cancelled_by__isnull=True, cancelled_at__isnull=True)
                | Q(cancelled_by__isnull=False, cancelled_at__isnull=False),
                what="cancelled_by_and_at_together",
            ),
            models.UniqueConstraint(
                "kind",
                "user",
                Coalesce("fund", 0, output_field=models.BigIntegerField()),
                "role",
                condition=Q(state__in=["pending", "confirmed"]),
                name=PREFIX + "one_open_change",
            ),
        ]

    def __str__(self) -> str:
        what = f"{self.role} on {self.fund}" if self.kind == self.Kind.ROLE_GRANT else self.kind
        return f"#{self.pk} {what} for {self.user}"


class AuditChain(models.Model):
    """The head of the audit chain: one row, locked by every writer so the chain stays linear."""

    length = models.PositiveBigIntegerField(default=0)
    head_hash = models.CharField(max_length=64)
    # HMAC of (length, head_hash) under ALEM_AUDIT_KEY: the head cannot be wound back to a
    # shorter chain by someone who holds only the database.
    seal = models.CharField(max_length=64, blank=True)
    # The last event's public digest (rule 11): what a checkpoint signs.
    head_digest = models.CharField(max_length=64, default="0" * 64)

    class Meta:
        constraints = [check(Q(id=1), what="single_row")]

    def __str__(self) -> str:
        return f"Audit chain of {self.length} events"


class AuditEvent(models.Model):
    """An append-only, hash-chained record of one thing that happened or was refused.

    ``hash`` covers the row's content and ``previous_hash``; ``manage.py verify_audit`` replays
    the chain. Rows are written by ``governance.audit.audit_record`` only, never changed.
    """

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True, choices=AuditAction.choices)
    fund = models.ForeignKey(
        Fund, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    proposal = models.ForeignKey(
        Proposal, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    payload = models.JSONField(default=dict)
    previous_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)
    # The public chain (rule 11): plain SHA-256 of the previous digest and the same content,
    # which anyone can recompute from an export; signed checkpoints pin its head.
    previous_digest = models.CharField(max_length=64, unique=True)
    digest = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        constraints = [
            check(Q(sequence__gte=1), what="sequence_positive"),
            check(Q(digest__regex=r"^[0-9a-f]{64}$"), what="digest_hex"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action}"


class AuditCheckpoint(models.Model):
    """A signed statement of the public chain's head: "event #sequence has this digest".

    Written by ``governance.checkpoints.checkpoint_sign`` only, never changed. The Ed25519
    signature covers ``checkpoint_message`` under the key named by ``public_key``; the private
    key is in the settings, never in the database. Whoever kept a copy of a checkpoint can prove
    a later rewrite of any event up to ``sequence`` (``verifier/alem_verify.py``).
    """

    sequence = models.PositiveBigIntegerField(unique=True)
    digest = models.CharField(max_length=64, unique=True)
    signed_at = models.DateTimeField()
    public_key = models.CharField(max_length=64, help_text="Raw Ed25519 public key, hex.")
    signature = models.CharField(max_length=128, help_text="Ed25519 signature, hex.")

    class Meta:
        ordering = ["-sequence"]
        constraints = [
            check(Q(sequence__gte=1), what="sequence_positive"),
            check(Q(digest__regex=r"^[0-9a-f]{64}$"), what="digest_hex"),
            check(Q(public_key__regex=r"^[0-9a-f]{64}$"), what="public_key_hex"),
            check(Q(signature__regex=r"^[0-9a-f]{128}$"), what="signature_hex"),
        ]

    def __str__(self) -> str:
        return f"Checkpoint of event #{self.sequence}"


class CheckpointAnchor(models.Model):
    """A checkpoint's digest written on chain (``governance.anchoring``), when anchoring is on.

    The one row per checkpoint follows the attempts: ``pending`` until a transaction is
    accepted by the node (each failure counted, its reason kept and the next attempt backed
    off), ``sent`` with its hash until read back deep enough, then ``confirmed``. A transaction
    the node lost, or one carrying other data, sends the anchor back to ``pending``. The
    checkpoint itself never changes.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting to be sent")
        SENT = "sent", _("Sent, waiting for confirmations")
        CONFIRMED = "confirmed", _("Confirmed on chain")

    checkpoint = models.OneToOneField(
        AuditCheckpoint, on_delete=models.PROTECT, related_name="anchor"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    chain_id = models.PositiveBigIntegerField(null=True, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    next_attempt_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-checkpoint__sequence"]
        constraints = [
            check(
                Q(state="pending") | Q(tx_hash__regex=r"^0x[0-9a-f]{64}$"),
                what="sent_has_tx_hash",
            ),
            check(
                ~Q(state="confirmed") | Q(block_number__isnull=False, confirmed_at__isnull=False),
                what="confirmed_has_block",
            ),
        ]

    def __str__(self) -> str:
        return f"Anchor of checkpoint #{self.checkpoint.sequence}: {self.state}"


class AuditVerification(models.Model):
    """One verification of the whole audit chain: when it ran, who asked, what it found.

    Written by ``governance.audit.audit_verification_run`` (hourly, and when an auditor asks);
    the auditors' page shows the latest, so viewing the log never re-hashes the whole chain.
    """

    checked_at = models.DateTimeField(db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the schedule ran it.",
    )
    ok = models.BooleanField()
    verified_count = models.PositiveBigIntegerField(
        help_text="Events verified: all of them, or those before the first bad one."
    )
    first_bad_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-checked_at", "-id"]
        constraints = [
            check(
                (Q(ok=True, first_bad_sequence__isnull=True, reason=""))
                | (Q(ok=False) & ~Q(reason="")),
                what="reason_iff_broken",
            )
        ]

    def __str__(self) -> str:
        state = "intact" if self.ok else f"broken at #{self.first_bad_sequence}"
        return f"Audit chain {state}, {self.verified_count} verified ({self.checked_at:%Y-%m-%d})"


class Execution(models.Model):
    """One fill recorded by a treasury operator against an approved proposal (rule 10), of the
    proposal's ``kind``:

    - buy: ``quantity`` bought at ``price_usd``; ``cost_usd`` is quantity x price + fee, the
      cash that left;
    - sell: ``quantity`` sold at ``price_usd``; ``cost_usd`` is quantity x price - fee, the
      cash that came in, and ``realised_pnl_usd`` that minus the coins' average cost;
    - transfer: ``quantity`` delivered to the destination, ``fee_quantity`` more taken from the
      source by the network; ``price_usd`` is the consensus price it was valued at;
    - intake: ``quantity`` received, valued at the consensus ``price_usd`` at acceptance (1 for
      US dollars).

    All exact; the fill books its ledger entries in the same transaction. ``external_ref``
    (exchange order id or transaction hash) is unique, so the same fill reported twice books
    nothing twice.
    """

    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="executions")
    kind = models.CharField(max_length=16, choices=OperationKind.choices, default="buy")
    quantity = QuantityField()
    price_usd = PriceField()
    fee_usd = AmountField(default=0)
    fee_quantity = QuantityField(
        default=0, help_text=_("Transfer: the network fee, in units of the asset.")
    )
    cost_usd = AmountField(
        help_text=_(
            "Buy: quantity x price + fee; sell: quantity x price - fee; transfer and intake: "
            "quantity x price."
        )
    )
    realised_pnl_usd = AmountField(
        null=True, blank=True, help_text=_("Sell: net proceeds minus the average cost sold.")
    )
    account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="executions",
        help_text=_("The custody account the coins came into or out of."),
    )
    destination_account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incoming_executions",
    )
    venue = models.CharField(max_length=100)
    external_ref = models.CharField(max_length=200, unique=True)
    executed_at = models.DateTimeField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="executions"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    evidence = models.JSONField(
        default=dict, help_text=_("The consensus price it was checked against.")
    )
    # The second factor that confirmed it: the persistent id of the operator's TOTP device.
    confirmed_by_device = models.CharField(max_length=100)
    tx_hash = models.CharField(
        max_length=66,
        blank=True,
        validators=[
            RegexValidator(TX_HASH, _("A transaction hash is 64 hex digits (0x first on EVM)."))
        ],
        help_text=_("The on-chain transaction that delivered the coins, when there is one."),
    )

    class Meta:
        ordering = ["executed_at", "id"]
        constraints = [
            check(Q(quantity__gt=0), what="quantity_positive"),
            check(Q(price_usd__gt=0), what="price_positive"),
            check(Q(tx_hash="") | Q(tx_hash__regex=TX_HASH), what="tx_hash_format"),
            check(Q(fee_usd__gte=0), what="fee_not_negative"),
            check(Q(fee_quantity__gte=0), what="fee_quantity_not_negative"),
            check(Q(kind="transfer") | Q(fee_quantity=0), what="fee_quantity_only_on_transfer"),
            check(Q(kind="intake") & Q(fee_usd=0) | ~Q(kind="intake"), what="intake_has_no_fee"),
            # PostgreSQL's numeric arithmetic is exact, and the amount column has the 28
            # decimals of quantity (18) x price (10): the database holds the cost to the digit.
            check(
                Q(kind="buy", cost_usd=F("quantity") * F("price_usd") + F("fee_usd"))
                | Q(kind="sell", cost_usd=F("quantity") * F("price_usd") - F("fee_usd"))
                | Q(kind__in=["transfer", "intake"], cost_usd=F("quantity") * F("price_usd")),
                what="cost_by_kind",
            ),
            check(Q(kind="sell") | Q(realised_pnl_usd__isnull=True), what="pnl_only_on_sell"),
            check(
                Q(kind="transfer", destination_account__isnull=False)
                | ~Q(kind="transfer") & Q(destination_account__isnull=True),
                what="destination_only_on_transfer",
            ),
            check(~Q(external_ref=""), what="external_ref_set"),
            # Whatever writes the row: one reference in any letter case is booked once.
            models.UniqueConstraint(Lower("external_ref"), name=PREFIX + "external_ref_any_case"),
            check(~Q(confirmed_by_device=""), what="confirmed_by_device"),
        ]

    def __str__(self) -> str:
        asset = self.proposal.asset or "USD"
        return f"{self.kind} {self.quantity} {asset} @ {self.price_usd} ({self.external_ref})"


class CustodyAccountChange(models.Model):
    """Adding a custody account, or changing one, asked for by one fund administrator and put
    into effect only when a second one confirms it (rule 14); the account is then usable after
    the fund's cooling-off period. Written by ``governance.services.custody`` only.
    """

    class Action(models.TextChoices):
        ADD = "add", _("Add an account")
        CHANGE = "change", _("Change an account")

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for a second administrator")
        APPLIED = "applied", _("Confirmed and applied")
        CANCELLED = "cancelled", _("Cancelled")

    fund = models.ForeignKey(Fund, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    account = models.ForeignKey(
        CustodyAccount,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="changes",
        help_text=_("The account changed, or the one the addition created."),
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # The account's terms as they will be.
    name = models.CharField(max_length=200, validators=[reject_hidden_characters])
    kind = models.CharField(max_length=32, choices=CustodyAccount.Kind.choices)
    chain = models.CharField(max_length=100)
    address = models.CharField(max_length=200, blank=True)
    account_reference = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=500, validators=[reject_hidden_characters])
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # The second factor that confirmed it: the persistent id of the confirmer's TOTP device.
    confirmed_by_device = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            check(
                ~Q(state="applied") | ~Q(confirmed_by_device=""),
                what="applied_with_a_second_factor",
            ),
            # Four eyes: whoever asked for it does not confirm it.
            check(
                ~Q(state="applied") | ~Q(decided_by=F("requested_by")),
                what="confirmer_is_not_requester",
            ),
            check(
                Q(state="pending", decided_by__isnull=True, decided_at__isnull=True)
                | ~Q(state="pending") & Q(decided_by__isnull=False, decided_at__isnull=False),
                what="decided_by_and_at_once_decided",
            ),
            check(~Q(action="change") | Q(account__isnull=False), what="change_names_account"),
            check(~Q(state="applied") | Q(account__isnull=False), what="applied_has_account"),
            # One open change per account at a time.
            unique("account", what="one_pending_per_account", condition=Q(state="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.name} ({self.get_state_display()})"


class Preference(models.Model):
    """What one person prefers: the language of their pages and of the e-mails sent to them.

    Written by ``governance.preferences.language_preference_set`` when they choose a language
    while signed in; people without a row get the site's language.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="preference",
    )
    language = models.CharField(max_length=8, choices=settings.LANGUAGES)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            check(
                Q(language__in=[code for code, _name in settings.LANGUAGES]),
                what="language_offered",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.language}"


# The name of a token whose holder gave none.
DEFAULT_NAME = "API client"


class ApiToken(models.Model):
    """One API token, issued to one person for one device or client (``name``).

    The token itself is shown once, when it is issued; the database keeps its SHA-256
    ``digest`` (whoever reads the table cannot use what they read) and its first characters
    (``prefix``), for the holder to recognise it. A token works until ``expires_at`` or until it
    is revoked: by its holder (signing out, or from the list of their tokens), by a site
    administrator, or by a change of the holder's password or the deactivation of their account.
    Written by ``governance.api_tokens`` only.
    """

    class RevokedReason(models.TextChoices):
        SIGNED_OUT = "signed_out", _("Signed out")
        REVOKED_BY_USER = "revoked_by_user", _("Revoked by its holder")
        PASSWORD_CHANGED = "password_changed", _("Password changed")
        DEACTIVATED = "deactivated", _("Account deactivated")
        REVOKED_BY_ADMIN = "revoked_by_admin", _("Revoked by a site administrator")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(
        max_length=100,
        default=DEFAULT_NAME,
        help_text=_("The device or purpose its holder named when asking for it."),
    )
    prefix = models.CharField(max_length=16, help_text=_("The token's first characters."))
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True, choices=RevokedReason.choices)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"
        constraints = [
            check(Q(expires_at__gt=F("created_at")), what="expires_after_creation"),
            check(
                Q(revoked_at__isnull=True, revoked_reason="")
                | Q(revoked_at__isnull=False) & ~Q(revoked_reason=""),
                what="revoked_with_a_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.name} ({self.prefix}…)"


class TaskOutbox(models.Model):
    """A Celery task a change queues, written in the change's own transaction (the outbox).

    The change and its follow-up work commit together or not at all; after the commit
    ``governance.outbox`` publishes the task at once, and a row the broker refused waits here
    until ``outbox_relay`` (every minute, or ``manage.py outbox_relay``) sends it. ``request_id``
    is the id of the web request that made the change, carried into the task's headers when it
    is finally sent. Written by ``governance.outbox`` only.
    """

    task = models.CharField(max_length=200)  # the Celery task's registered name
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    available_at = models.DateTimeField()  # not sent before: a refused send backs off
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "queued task"
        indexes = [
            # The relay's question: the unsent rows due now, oldest first.
            models.Index(
                fields=["available_at", "created_at"],
                condition=Q(sent_at__isnull=True),
                name="governance_taskoutbox_unsent",
            ),
            models.Index(fields=["sent_at"], name="governance_taskoutbox_sent_at"),
        ]
        constraints = [
            check(
                Q(sent_at__isnull=True) | Q(sent_at__gte=F("created_at")),
                what="sent_after_creation",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task} ({'sent' if self.sent_at else 'waiting'})"
