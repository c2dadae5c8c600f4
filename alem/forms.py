"""Forms of the sign-in pages: password and one-time code, and the first code of a new device."""

from django import forms
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_login_failed
from django.utils.translation import gettext_lazy as _
from django_otp import match_token

from governance.second_factor import has_confirmed_device

CODE_WIDGET_ATTRS = {
    "class": "otp-input",
    "autocomplete": "one-time-code",
    "inputmode": "numeric",
    "pattern": "[0-9 ]*",
    "maxlength": "12",
}


def clean_code(value: str) -> str:
    """The code as typed, without the spaces some apps show between digit groups."""
    return "".join((value or "").split())


class SignInForm(forms.Form):
    """Username, password and, for a user with an authenticator, the current one-time code.

    Every failure reads the same ("username, password or code is wrong"), so the page never
    tells a guesser whether a username exists, whether the password was right or whether the
    account has an authenticator. A wrong or missing code after a right password counts as a
    failed sign-in for django-axes exactly like a wrong password does.
    """

    error_messages = {
        "invalid": _("The username, password or code is wrong. Check them and try again."),
    }

    username = forms.CharField(
        label=_("Username"),
        max_length=150,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    otp_token = forms.CharField(
        label=_("One-time code"),
        required=False,
        help_text=_(
            "The six-digit code your authenticator app shows now. Leave it empty if you have "
            "not set up an authenticator yet."
        ),
        widget=forms.TextInput(attrs=CODE_WIDGET_ATTRS),
    )

    def __init__(self, request, *args, **kwargs):
        self.request = request
        self.user = None
        self.device = None
        super().__init__(*args, **kwargs)

    def clean(self):
        cleaned = super().clean()
        username, password = cleaned.get("username"), cleaned.get("password")
        if not username or not password:
            return cleaned
        # Through authenticate(), so django-axes refuses a locked-out pair and counts failures.
        user = authenticate(self.request, username=username, password=password)
        if user is None:
            raise self._invalid()
        if has_confirmed_device(user):
            token = clean_code(cleaned.get("otp_token"))
            device = match_token(user, token) if token else None
            if device is None:
                # The password was right but the second factor was not: a failed sign-in all
                # the same, counted against this username and address.
                user_login_failed.send(
                    sender=__name__, credentials={"username": username}, request=self.request
                )
                raise self._invalid()
            self.device = device
        self.user = user
        return cleaned

    def _invalid(self) -> forms.ValidationError:
        return forms.ValidationError(self.error_messages["invalid"], code="invalid")


class DeviceConfirmForm(forms.Form):
    """The first code from a newly added authenticator, proving it was set up correctly."""

    otp_token = forms.CharField(
        label=_("Code from your authenticator app"),
        help_text=_("Enter the six digits the app shows now for Alem."),
        widget=forms.TextInput(attrs=CODE_WIDGET_ATTRS),
    )

    def __init__(self, device, *args, **kwargs):
        self.device = device
        super().__init__(*args, **kwargs)

    def clean_otp_token(self) -> str:
        token = clean_code(self.cleaned_data["otp_token"])
        if not self.device.verify_token(token):
            raise forms.ValidationError(
                _(
                    "That code does not match. Check that the app's clock is right and enter "
                    "the code it shows now."
                ),
                code="invalid",
            )
        return token
