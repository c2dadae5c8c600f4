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
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from governance.models import Decision, Proposal
from governance.vocabulary import AuditAction
from portfolio.models import Asset

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


class ProposalForm(forms.Form):
    """The terms of a draft, for ``proposal_create`` and ``proposal_update``.

    Offers the fund's whitelisted assets (and the proposal's own asset, should it have left the
    whitelist since) and the fund's funding sources; the services remain the authority."""

    asset = forms.ModelChoiceField(
        label=_("Asset"),
        queryset=None,
        empty_label=_("Choose an asset"),
        help_text=_("Only assets on the fund's whitelist are offered."),
    )
    notional_usd = _exact_decimal_field(
        MONEY_DIGITS,
        MONEY_PLACES,
        label=_("Notional (USD)"),
        help_text=_("The most the purchase may cost, fees included, in US dollars and cents."),
    )
    limit_price_usd = _exact_decimal_field(
        PRICE_DIGITS,
        PRICE_PLACES,
        label=_("Limit price (USD)"),
        help_text=_("The highest unit price the treasury may pay."),
    )
    funding_source = forms.ModelChoiceField(
        label=_("Funding source"), queryset=None, empty_label=_("Choose a funding source")
    )
    rationale = forms.CharField(
        label=_("Rationale"),
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=_("Why the fund should make this purchase, for the reviewers and the record."),
    )

    def __init__(self, *args, fund, proposal: Proposal | None = None, **kwargs):
        if proposal is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "asset": proposal.asset_id,
                "notional_usd": proposal.notional_usd,
                "limit_price_usd": proposal.limit_price_usd,
                "funding_source": proposal.funding_source_id,
                "rationale": proposal.rationale,
            }
        super().__init__(*args, **kwargs)
        offered = Q(whitelisting_funds=fund)
        if proposal is not None:
            offered |= Q(pk=proposal.asset_id)
        self.fields["asset"].queryset = Asset.objects.filter(offered).distinct().order_by("symbol")
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
    """One fill of an approved proposal, for ``execution_record``.

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


def without_code(form: forms.Form) -> forms.Form:
    """The same form, unbound, showing what was typed except the one-time code."""
    initial = {k: v for k, v in form.cleaned_data.items() if k != "otp_token"}
    if isinstance(initial.get("executed_at"), dt.datetime):
        initial["executed_at"] = initial["executed_at"].astimezone(ALMATY).replace(tzinfo=None)
    return type(form)(initial=initial)
