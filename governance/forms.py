"""Forms of the back office (Django admin): they parse input for one service call each."""

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from governance.models import DECIDING_ROLES, AdminChange, CustodyAccountChange, OperationKind
from governance.policies import StageSpec
from portfolio.disclosure import Disclosure
from portfolio.mandate import MAX_COOLING_OFF_HOURS, Mandate
from portfolio.models import Asset, CustodyAccount, Fund, FundRole

User = get_user_model()

MONEY_DIGITS, MONEY_PLACES = settings.ALEM_DECIMALS["money"]
PRICE_DIGITS, PRICE_PLACES = settings.ALEM_DECIMALS["price"]
RATIO_DIGITS, RATIO_PLACES = settings.ALEM_DECIMALS["ratio"]


class UserChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        full_name = obj.get_full_name()
        return f"{obj.username} ({full_name})" if full_name else obj.username


class RoleChangeForm(forms.Form):
    """Who gets (or loses) which role; the fund comes from the page. A grant is a request for
    ``admin_change_request`` (with its reason), a revocation goes to ``role_revoke``."""

    user = UserChoiceField(queryset=User.objects.filter(is_active=True).order_by("username"))
    role = forms.ChoiceField(choices=FundRole.choices)
    reason = forms.CharField(
        max_length=500,
        required=False,
        help_text=_("Why they need the role: a grant waits for a second site administrator."),
    )


class AdminChangeRequestForm(forms.Form):
    """A change that widens who may act, for ``admin_change_request``."""

    kind = forms.ChoiceField(choices=AdminChange.Kind.choices)
    user = UserChoiceField(queryset=User.objects.order_by("username"))
    fund = forms.ModelChoiceField(
        queryset=Fund.objects.order_by("name"),
        required=False,
        help_text=_("For a role grant only."),
    )
    role = forms.ChoiceField(
        choices=[("", "---------"), *FundRole.choices],
        required=False,
        help_text=_("For a role grant only."),
    )
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))


class AdminChangeConfirmForm(forms.Form):
    """The confirming administrator's one-time code, for ``admin_change_confirm``."""

    otp_token = forms.CharField(
        label=_("One-time code"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text=_("The current code from your own authenticator app."),
    )


class PolicyDraftForm(forms.Form):
    """The fund and note of a new policy version, for ``policy_draft``."""

    fund = forms.ModelChoiceField(queryset=Fund.objects.order_by("name"))
    note = forms.CharField(
        max_length=500,
        required=False,
        help_text=_("Why this version: what changes and on whose decision."),
    )
    disclose_holdings = forms.BooleanField(
        label=_("Publish the fund's public pages"),
        required=False,
        help_text=_("Holdings, purchases, this policy and decision statistics, after the delay."),
    )
    disclosure_delay_days = forms.IntegerField(
        label=_("Disclosure delay (days)"), min_value=0, max_value=3650, required=False
    )
    disclose_deciders = forms.BooleanField(
        label=_("Name who decided in the public statistics"), required=False
    )
    # The mandate the version carries (``Fund.MANDATE``); a field left empty keeps the fund's.
    # The ranges are the service's (``Mandate.validate``), which names the field it refuses.
    max_asset_share = forms.DecimalField(
        label=_("Largest share of one asset (0-1)"),
        max_digits=RATIO_DIGITS,
        decimal_places=RATIO_PLACES,
        required=False,
    )
    max_proposal_notional_usd = forms.DecimalField(
        label=_("Single-proposal limit (USD)"),
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        required=False,
    )
    execution_window_days = forms.IntegerField(
        label=_("Execution window (days)"), min_value=0, max_value=32767, required=False
    )
    price_tolerance = forms.DecimalField(
        label=_("Price tolerance (0-1)"),
        max_digits=RATIO_DIGITS,
        decimal_places=RATIO_PLACES,
        required=False,
    )
    max_fee_share = forms.DecimalField(
        label=_("Largest fee share of a fill's value (0-1)"),
        max_digits=RATIO_DIGITS,
        decimal_places=RATIO_PLACES,
        required=False,
    )
    custody_cooling_off_hours = forms.IntegerField(
        label=_("Custody account cooling-off (hours)"),
        min_value=0,
        max_value=32767,
        required=False,
        help_text=_(
            "How long a custody account added or changed waits before any operation may use "
            "it (0 to %(max)s)."
        )
        % {"max": MAX_COOLING_OFF_HOURS},
    )

    def mandate(self) -> Mandate:
        """The mandate the version carries; each field left empty keeps the fund's value."""
        data, fund = self.cleaned_data, self.cleaned_data["fund"]
        return Mandate(
            **{
                field: getattr(fund, field) if data[field] is None else data[field]
                for field in Fund.MANDATE
            }
        )

    def disclosure(self) -> Disclosure:
        """The disclosure the version carries; a delay left empty keeps the fund's."""
        data = self.cleaned_data
        delay = data["disclosure_delay_days"]
        if delay is None:
            delay = data["fund"].disclosure_delay_days
        return Disclosure(data["disclose_holdings"], delay, data["disclose_deciders"])


class PolicyStageForm(forms.Form):
    order = forms.IntegerField(min_value=1, max_value=32767)
    name = forms.CharField(max_length=100)
    permission = forms.ChoiceField(choices=[(role.value, role.label) for role in DECIDING_ROLES])
    quorum = forms.IntegerField(min_value=1, max_value=32767, initial=1)
    applies_from_usd = forms.DecimalField(
        label=_("Applies from (USD)"),
        min_value=0,
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        initial=0,
    )
    kinds = forms.MultipleChoiceField(
        label=_("For"),
        choices=OperationKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("The kinds of operation the stage decides; none ticked for every kind."),
    )

    def as_spec(self) -> StageSpec:
        data = self.cleaned_data
        return StageSpec(
            order=data["order"],
            name=data["name"],
            permission=data["permission"],
            quorum=data["quorum"],
            applies_from_usd=data["applies_from_usd"],
            kinds=tuple(data["kinds"]),
        )


class BasePolicyStageFormSet(forms.BaseFormSet):
    def stage_specs(self) -> list[StageSpec]:
        """The stages as plain values: prefilled and filled-in rows, less deleted ones."""
        return [
            form.as_spec()
            for index, form in enumerate(self.forms)
            if (index < self.initial_form_count() or form.has_changed())
            and not self._should_delete_form(form)
            and form.cleaned_data
        ]


PolicyStageFormSet = forms.formset_factory(
    PolicyStageForm,
    formset=BasePolicyStageFormSet,
    extra=3,
    can_delete=True,
    min_num=1,
    validate_min=True,
    max_num=20,
    validate_max=True,
)


class ManualPriceForm(forms.Form):
    """A USD price read elsewhere, for ``price_enter_manual``."""

    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("symbol"))
    price = forms.DecimalField(
        label=_("Price (USD)"),
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        min_value=0,
    )
    observed_at = forms.DateTimeField(
        required=False,
        help_text=_("When the price was seen (Asia/Almaty time); empty for now."),
    )


class CustodyChangeRequestForm(forms.Form):
    """An account to add, or the new terms of one of the fund's accounts, for
    ``custody_change_request``; the fund comes from the page."""

    action = forms.ChoiceField(choices=CustodyAccountChange.Action.choices)
    account = forms.ModelChoiceField(
        queryset=CustodyAccount.objects.none(),
        required=False,
        help_text=_("The account to change; empty to add one."),
    )
    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=CustodyAccount.Kind.choices)
    chain = forms.CharField(max_length=100, help_text=_("As the assets name it, e.g. Bitcoin."))
    address = forms.CharField(
        max_length=200,
        required=False,
        help_text=_("The public address; empty for an account known by its reference only."),
    )
    account_reference = forms.CharField(
        max_length=200,
        required=False,
        help_text=_("The custodian's or exchange's account number."),
    )
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, fund: Fund, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = fund.custody_accounts.filter(active=True)


class CustodyAccountRemoveForm(forms.Form):
    """Which of the fund's active accounts to remove and why, for ``custody_account_remove``."""

    account = forms.ModelChoiceField(queryset=CustodyAccount.objects.none())
    reason = forms.CharField(max_length=500)

    def __init__(self, *args, fund: Fund, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = fund.custody_accounts.filter(active=True)
