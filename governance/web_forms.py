"""Forms of the officials' pages: they parse input for one service call each.

They check the format of each field only (numbers, the digits a column holds, choices the user
may see). Every rule of the workflow is checked by ``governance.services``, whose
``ValidationError``s are put back on the fields with ``add_service_errors``.
"""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from governance import operations
from governance.models import Decision, OperationKind, Proposal
from governance.services.proposals import EDITABLE_FIELDS
from governance.vocabulary import AuditAction
from portfolio.models import Asset, CustodyAccount

MONEY_DIGITS, MONEY_PLACES = settings.ALEM_DECIMALS["money"]
PRICE_DIGITS, PRICE_PLACES = settings.ALEM_DECIMALS["price"]
QUANTITY_DIGITS, QUANTITY_PLACES = settings.ALEM_DECIMALS["quantity"]
AMOUNT_DIGITS, AMOUNT_PLACES = settings.ALEM_DECIMALS["amount"]

# Execution times are typed on the wall clock of the fund's treasury, in Almaty.
ALMATY = ZoneInfo(settings.TIME_ZONE)


def greater_than_zero(value) -> None:
    if value is not None and value <= 0:
        raise ValidationError(_("Enter an amount greater than zero."), code="not_positive")


def _decimal_input(**attrs) -> forms.TextInput:
    return forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", **attrs})


def _exact_decimal_field(
    digits: int, places: int, *, validators=(greater_than_zero,), **kwargs
) -> forms.DecimalField:
    """A decimal input that refuses more digits than its column holds instead of rounding.

    Localised, so each language's decimal mark is accepted (``1234,5`` in Russian)."""
    return forms.DecimalField(
        max_digits=digits,
        decimal_places=places,
        localize=True,
        validators=list(validators),
        widget=_decimal_input(),
        error_messages={
            "invalid": _("Enter a number, for example 1234.56."),
            "max_decimal_places": ngettext_lazy(
                "Enter at most %(max)s decimal place; amounts are never rounded.",
                "Enter at most %(max)s decimal places; amounts are never rounded.",
                "max",
            ),
            "max_digits": ngettext_lazy(
                "Enter at most %(max)s digit in total.",
                "Enter at most %(max)s digits in total.",
                "max",
            ),
            "max_whole_digits": ngettext_lazy(
                "Enter at most %(max)s digit before the decimal mark.",
                "Enter at most %(max)s digits before the decimal mark.",
                "max",
            ),
        },
        **kwargs,
    )


def add_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ``ValidationError`` on the form: per field where it names one of the
    form's fields, otherwise above the form."""
    if hasattr(error, "error_dict"):
        for name, errors in error.error_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error)


class CustodyAccountChoiceField(forms.ModelChoiceField):
    """A custody account named as the author needs to choose it: name, kind, chain, and until
    when it is still cooling off after it was added or changed."""

    def label_from_instance(self, account: CustodyAccount) -> str:
        label = _("%(name)s (%(kind)s, %(chain)s)") % {
            "name": account.name,
            "kind": account.get_kind_display(),
            "chain": account.chain,
        }
        if account.usable_from > timezone.now():
            until = formats.date_format(timezone.localtime(account.usable_from), "DATETIME_FORMAT")
            label = _("%(account)s, cooling off until %(until)s") % {
                "account": label,
                "until": until,
            }
        return label


K = OperationKind

# What each field is called and what it says, by kind, where it differs from one kind to
# another (the terms each kind takes are ``operations.TERMS``).
_TERM_LABELS = {
    "limit_price_usd": {
        K.BUY: (_("Limit price (USD)"), _("The highest unit price the treasury may pay.")),
        K.SELL: (_("Lowest price (USD)"), _("The lowest unit price the treasury may sell at.")),
    },
    "account": {
        K.BUY: (
            _("Custody account"),
            _("Where the coins go once bought; leave empty to decide at execution."),
        ),
        K.SELL: (_("From custody account"), _("The account the coins are sold from.")),
        K.TRANSFER: (_("From custody account"), _("The account the coins leave.")),
        K.INTAKE: (
            _("Custody account"),
            _("Where the coins are received; none for US dollars."),
        ),
    },
    "funding_source": {
        K.BUY: (_("Funding source"), _("The money the purchase is paid from.")),
        K.INTAKE: (_("Funding source"), _("Where the assets come from.")),
    },
    "asset": {
        K.BUY: (_("Asset"), _("Only assets on the fund's whitelist are offered.")),
        K.SELL: (_("Asset"), ""),
        K.TRANSFER: (_("Asset"), ""),
        K.INTAKE: (_("Asset"), _("Leave empty for an intake of US dollars.")),
    },
}
_RATIONALE_HELP = {
    K.BUY: _("Why the fund should make this purchase, for the reviewers and the record."),
    K.SELL: _("Why the fund should make this sale, for the reviewers and the record."),
    K.TRANSFER: _("Why the coins should move, for the reviewers and the record."),
    K.INTAKE: _("What the fund is receiving and why, for the reviewers and the record."),
}


class ProposalForm(forms.Form):
    """The terms of a draft of one ``kind``, for ``proposal_create`` and ``proposal_update``:
    only the fields that kind takes (``operations.TERMS``), the required ones required.

    Offers the assets the kind may name (a buy only the fund's whitelist), the proposal's own
    asset should it have left the list since, the fund's active custody accounts and its funding
    sources; the services remain the authority. A draft keeps its kind: it is never a field."""

    asset = forms.ModelChoiceField(label=_("Asset"), queryset=None)
    notional_usd = _exact_decimal_field(
        MONEY_DIGITS,
        MONEY_PLACES,
        label=_("Notional (USD)"),
        help_text=_("The most the purchase may cost, fees included, in US dollars and cents."),
    )
    limit_price_usd = _exact_decimal_field(PRICE_DIGITS, PRICE_PLACES, label=_("Limit price (USD)"))
    quantity = _exact_decimal_field(
        QUANTITY_DIGITS,
        QUANTITY_PLACES,
        label=_("Quantity (units)"),
        help_text=_("How much of the asset, in units; valued at the consensus price."),
    )
    account = CustodyAccountChoiceField(
        label=_("Custody account"), queryset=None, empty_label=_("Choose an account")
    )
    destination_account = CustodyAccountChoiceField(
        label=_("To custody account"),
        queryset=None,
        empty_label=_("Choose an account"),
        help_text=_("The account the coins arrive in, on the same chain."),
    )
    funding_source = forms.ModelChoiceField(
        label=_("Funding source"), queryset=None, empty_label=_("Choose a funding source")
    )
    document_reference = forms.CharField(
        label=_("Document reference"),
        max_length=200,
        help_text=_(
            "The court decision, mining statement or budget order the intake rests on, "
            "as numbered on it."
        ),
    )
    rationale = forms.CharField(label=_("Rationale"), widget=forms.Textarea(attrs={"rows": 6}))

    def __init__(
        self, *args, fund, kind: str = OperationKind.BUY, proposal: Proposal | None = None, **kwargs
    ):
        if proposal is not None:
            kind = proposal.kind
            kwargs.setdefault(
                "initial", {name: getattr(proposal, name) for name in EDITABLE_FIELDS}
            )
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.kind = kind
        terms = operations.TERMS[kind]
        for name in list(self.fields):
            if name != "rationale" and name not in terms.allowed:
                del self.fields[name]
                continue
            field = self.fields[name]
            field.required = name == "rationale" or name in terms.required
            if name in _TERM_LABELS:
                field.label, field.help_text = _TERM_LABELS[name][kind]
        self.fields["rationale"].help_text = _RATIONALE_HELP[kind]
        own = (lambda name: Q(pk=getattr(proposal, f"{name}_id"))) if proposal else None
        if "asset" in self.fields:
            offered = Q(whitelisting_funds=fund) if kind == K.BUY else Q()
            if own is not None and kind == K.BUY:
                offered |= own("asset")
            asset = self.fields["asset"]
            asset.queryset = Asset.objects.filter(offered).distinct().order_by("symbol")
            asset.empty_label = _("US dollars") if kind == K.INTAKE else _("Choose an asset")
        for name in ("account", "destination_account"):
            if name in self.fields:
                offered = Q(active=True)
                if own is not None:
                    offered |= own(name)
                self.fields[name].queryset = fund.custody_accounts.filter(offered).order_by("name")
                if kind == K.BUY:
                    self.fields[name].empty_label = _("None yet")
                elif kind == K.INTAKE:
                    self.fields[name].empty_label = _("None: US dollars")
        if "funding_source" in self.fields:
            self.fields["funding_source"].queryset = fund.funding_sources.order_by("name")


class WithdrawForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason for withdrawing (optional)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


def plausible_date(value: dt.date) -> None:
    # Dates far outside the log's life would overflow when turned into moments in time.
    if not dt.date(2000, 1, 1) <= value <= dt.date(9998, 12, 31):
        raise ValidationError(_("Enter a date from the year 2000 on."), code="implausible_date")


class AuditFilterForm(forms.Form):
    """The audit log's filters (GET). Every field is optional; bad input is an error shown
    beside the field, never a server error."""

    fund = forms.ModelChoiceField(label=_("Fund"), queryset=None, required=False)
    action = forms.ChoiceField(label=_("Action"), required=False)
    actor = forms.CharField(label=_("Actor (username)"), required=False, max_length=150)
    proposal = forms.IntegerField(
        label=_("Proposal number"), required=False, min_value=1, max_value=2**63 - 1
    )
    date_from = forms.DateField(
        label=_("From (date)"),
        required=False,
        validators=[plausible_date],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    date_to = forms.DateField(
        label=_("To (date, inclusive)"),
        required=False,
        validators=[plausible_date],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    def __init__(self, *args, funds, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["fund"].queryset = funds.order_by("name")
        self.fields["fund"].empty_label = _("All my funds")
        labels = sorted(
            ((code, str(label)) for code, label in AuditAction.choices), key=lambda item: item[1]
        )
        self.fields["action"].choices = [("", _("All actions")), *labels]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return cleaned

    def filters(self) -> dict:
        """Keyword arguments for ``governance.audit.audit_events_for_user``.

        Dates are days in the site's time zone (Almaty); the end date is inclusive."""
        data = self.cleaned_data

        def day_start(day: dt.date) -> dt.datetime:
            return timezone.make_aware(dt.datetime.combine(day, dt.time.min))

        return {
            "fund": data.get("fund"),
            "action": data.get("action") or "",
            "actor_username": (data.get("actor") or "").strip(),
            "proposal_id": data.get("proposal"),
            "created_from": day_start(data["date_from"]) if data.get("date_from") else None,
            "created_before": (
                day_start(data["date_to"] + dt.timedelta(days=1)) if data.get("date_to") else None
            ),
        }


# ---------------------------------------------------------------------------------------------
# Deciding and recording fills
# ---------------------------------------------------------------------------------------------


class OneTimeCodeInput(forms.TextInput):
    """A code field that never shows a code back: each code is good once and only briefly."""

    def format_value(self, value):
        return None


def _otp_field() -> forms.CharField:
    # Not required here: without a code the service refuses with the reason (no device, or
    # missing code), which the page then explains.
    return forms.CharField(
        label=_("One-time code"),
        required=False,
        max_length=16,
        help_text=_("The 6-digit code your authenticator app shows now."),
        widget=OneTimeCodeInput(
            attrs={
                "inputmode": "numeric",
                "autocomplete": "one-time-code",
                "class": "otp-input",
                "pattern": "[0-9 ]*",
            }
        ),
    )


class PageForm(forms.Form):
    """A form of these pages: labels end without a colon."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class DecisionForm(PageForm):
    """A verdict on the current version at the current stage, for ``decision_record``."""

    verdict = forms.ChoiceField(
        label=_("Your decision"), choices=Decision.Verdict.choices, widget=forms.RadioSelect
    )
    comment = forms.CharField(
        label=_("Comment"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_(
            "Required when you reject or request changes: the author and the auditors read it."
        ),
    )
    stage_order = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    otp_token = _otp_field()

    def clean(self):
        cleaned = super().clean()
        verdict = cleaned.get("verdict")
        if (
            verdict in (Decision.Verdict.REJECT, Decision.Verdict.REQUEST_CHANGES)
            and not (cleaned.get("comment") or "").strip()
        ):
            self.add_error(
                "comment", _("Say why: a comment is required to reject or request changes.")
            )
        return cleaned


class AlmatyDateTimeField(forms.DateTimeField):
    """A ``datetime-local`` value read as Almaty wall-clock time, returned timezone-aware."""

    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def to_python(self, value):
        if isinstance(value, str):
            value = value.strip()
            for fmt in self.input_formats:
                try:
                    naive = dt.datetime.strptime(value, fmt)
                except ValueError:
                    continue
                return naive.replace(tzinfo=ALMATY)
        return super().to_python(value)


class FillForm(PageForm):
    """One fill of an approved proposal of ``kind``, for ``execution_record``: a buy or a sale
    at its traded price and USD fee; a transfer with the network's fee in units; an intake with
    neither (valued at the consensus price at acceptance).

    The numbers are exact like the proposal's terms: the language's decimal mark is accepted and
    more digits than the ledger holds are refused, never rounded."""

    quantity = _exact_decimal_field(
        QUANTITY_DIGITS, QUANTITY_PLACES, validators=(), label=_("Quantity")
    )
    price_usd = _exact_decimal_field(
        PRICE_DIGITS, PRICE_PLACES, validators=(), label=_("Price (USD per unit)")
    )
    fee_usd = _exact_decimal_field(
        AMOUNT_DIGITS, AMOUNT_PLACES, validators=(), label=_("Fee (USD)"), initial=Decimal("0")
    )
    fee_quantity = _exact_decimal_field(
        QUANTITY_DIGITS,
        QUANTITY_PLACES,
        validators=(),
        label=_("Network fee (units)"),
        initial=Decimal("0"),
        help_text=_("What the network took, in units of the asset, out of the source account."),
    )
    venue = forms.CharField(label=_("Venue"), max_length=100)
    external_ref = forms.CharField(
        label=_("External reference"),
        max_length=200,
        help_text=_("The exchange's order id or the transaction hash."),
    )
    executed_at = AlmatyDateTimeField(
        label=_("Executed at (Almaty time)"),
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"
        ),
    )
    tx_hash = forms.CharField(
        label=_("On-chain transaction"),
        max_length=66,
        required=False,
        help_text=_(
            "The hash of the transaction that delivered the coins, if any; published with the "
            "purchase once the fund's disclosure delay has passed."
        ),
    )
    close = forms.BooleanField(
        label=_("Close the proposal with this fill and release the notional that remains"),
        required=False,
    )
    otp_token = _otp_field()

    # The fields each kind's fill takes (rule 10; ``services.executions._validate_fill_terms``).
    KIND_FIELDS = {
        OperationKind.BUY: {"price_usd", "fee_usd"},
        OperationKind.SELL: {"price_usd", "fee_usd"},
        OperationKind.TRANSFER: {"fee_quantity"},
        OperationKind.INTAKE: set(),
    }
    PRICED = {"price_usd", "fee_usd", "fee_quantity"}

    def __init__(self, *args, kind: str = OperationKind.BUY, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        for name in self.PRICED - self.KIND_FIELDS[kind]:
            del self.fields[name]
        if kind != OperationKind.BUY:
            self.fields["close"].label = _(
                "Close the proposal with this fill and release the quantity that remains"
            )
        if kind in (OperationKind.TRANSFER, OperationKind.INTAKE):
            self.fields["venue"].label = _("Network or custodian")
            self.fields["external_ref"].help_text = _(
                "The transaction hash, or the custodian's reference for the movement."
            )
            self.fields["tx_hash"].help_text = _(
                "The hash of the transaction that moved the coins, if any."
            )
        if kind == OperationKind.INTAKE:
            self.fields["quantity"].help_text = _(
                "What was received, in units; valued at the consensus price at acceptance."
            )
            self.fields["executed_at"].label = _("Received at (Almaty time)")

    def clean_quantity(self):
        value = self.cleaned_data["quantity"]
        if value <= 0:
            raise ValidationError(_("The quantity must be more than zero."))
        return value

    def clean_price_usd(self):
        value = self.cleaned_data["price_usd"]
        if value <= 0:
            raise ValidationError(_("The price must be more than zero."))
        return value

    def clean_fee_usd(self):
        value = self.cleaned_data["fee_usd"]
        if value < 0:
            raise ValidationError(_("The fee cannot be negative."))
        return value

    def clean_fee_quantity(self):
        value = self.cleaned_data["fee_quantity"]
        if value < 0:
            raise ValidationError(_("The fee cannot be negative."))
        return value

    def fill_terms(self) -> dict:
        """The cleaned fill as ``execution_record`` takes it for the kind."""
        data = self.cleaned_data
        terms = {
            "quantity": data["quantity"],
            "venue": data["venue"].strip(),
            "external_ref": data["external_ref"].strip(),
            "executed_at": data["executed_at"],
            "otp_token": data["otp_token"],
            "close": data["close"],
            "tx_hash": data["tx_hash"].strip(),
        }
        return terms | {name: data[name] for name in self.KIND_FIELDS[self.kind]}


def without_code(form: forms.Form) -> forms.Form:
    """The same form, unbound, showing what was typed except the one-time code."""
    initial = {k: v for k, v in form.cleaned_data.items() if k != "otp_token"}
    if isinstance(initial.get("executed_at"), dt.datetime):
        initial["executed_at"] = initial["executed_at"].astimezone(ALMATY).replace(tzinfo=None)
    kind = {"kind": form.kind} if isinstance(form, FillForm) else {}
    return type(form)(initial=initial, **kind)
