"""Sign-in with two factors, sign-out, enrolling an authenticator, one's API tokens, the
language switcher and the lockout page.

Signing in takes a username, a password and, once the person has an authenticator (a TOTP app
such as Google Authenticator, Microsoft Authenticator or FreeOTP), the code it shows now. Every
sign-in goes through ``django.contrib.auth.authenticate`` so django-axes counts failures twice:
per username from any address and per address whatever the username; five in either count lock
that account, or that address, out for the cool-off (``AXES_*`` in ``alem.settings``). A session
opened with a code is *verified* (django-otp); the back office requires that, and deciding or
executing roles must enrol an authenticator before they can use the site (``alem.middleware``).

Signing out ends this browser's session only. API tokens belong to devices: each is revoked on
its own (the "API tokens" page here, or the API's ``auth/logout/``), all of them by
``auth/logout-all/`` or by a change of password.

Changing or removing a confirmed authenticator (a lost phone) is an administrator's job: in the
back office under "TOTP devices", delete the person's device; on their next visit they enrol a
new one here. People cannot replace their own device, so a stolen password alone never suffices
to swap in the thief's authenticator.
"""

import base64
import math
from urllib.parse import urlencode

import django_otp
import qrcode
import qrcode.image.svg
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import admin, auth, messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from django.views.i18n import set_language
from django_otp.plugins.otp_totp.models import TOTPDevice

from alem.forms import DeviceConfirmForm, SignInForm
from governance.api_tokens import (
    api_token_revoke,
    api_tokens_ended,
    api_tokens_live,
    api_tokens_of,
    api_tokens_revoke_all,
)
from governance.models import ApiToken
from governance.preferences import OFFERED_LANGUAGES, language_preference_set, stored_language
from governance.second_factor import (
    has_confirmed_device,
    second_factor_enrolment_confirm,
    second_factor_enrolment_start,
)

# Where the API lives (alem.urls): its lockout answer is JSON, not a page.
API_PATH_PREFIX = "/api/"
# How many of the tokens that no longer work the page lists, newest first.
ENDED_TOKENS_SHOWN = 20


def _safe_next(request) -> str | None:
    """The ``next`` address from the form or the query string, if it stays on this site."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


@sensitive_post_parameters("password", "otp_token")
@csrf_protect
@never_cache
def login(request):
    """The sign-in form: username, password and, for people with an authenticator, a code."""
    form = SignInForm(request, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        auth.login(request, form.user)
        if form.device is not None:
            django_otp.login(request, form.device)
        response = redirect(_safe_next(request) or settings.LOGIN_REDIRECT_URL)
        _carry_language(request, response, form.user)
        return response
    return render(
        request, "registration/login.html", {"form": form, "next": _safe_next(request) or ""}
    )


def _carry_language(request, response, user) -> None:
    """At sign-in, the language the person chose before becomes this browser's; someone who never
    chose keeps what this browser shows, and a language picked on the sign-in page is stored."""
    stored = stored_language(user)
    if stored is not None:
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME,
            stored,
            max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH,
            domain=settings.LANGUAGE_COOKIE_DOMAIN,
            secure=settings.LANGUAGE_COOKIE_SECURE,
            httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,
        )
    elif (chosen := request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)) in OFFERED_LANGUAGES:
        language_preference_set(user=user, language=chosen)


@require_POST
def language_switch(request):
    """Django's ``set_language`` (the cookie, then back to the page), and for a signed-in person
    the choice is stored: their e-mails and their next sign-in elsewhere follow it."""
    response = set_language(request)
    language = request.POST.get("language")
    if request.user.is_authenticated and language in OFFERED_LANGUAGES:
        language_preference_set(user=request.user, language=language)
    return response


@require_POST
def logout(request):
    """Sign out (POST only, so no link or image elsewhere can sign anyone out)."""
    auth.logout(request)
    return redirect(settings.LOGOUT_REDIRECT_URL)


def admin_login(request, extra_context=None):
    """The back office's sign-in, replaced by the site's: one form, one lockout, one code.

    A signed-in person without an authenticator is sent to enrol one first, since the back
    office accepts only sessions verified by a code.
    """
    target = _safe_next(request) or reverse("admin:index")
    if admin.site.has_permission(request):
        return redirect(target)
    if request.user.is_authenticated and not has_confirmed_device(request.user):
        return redirect(f"{reverse('otp-enrol')}?{urlencode({'next': target})}")
    return redirect(f"{reverse('login')}?{urlencode({'next': target})}")


def _qr_code_data_uri(text: str) -> str:
    """``text`` as a QR code, an SVG image inlined as a data: URI (the CSP allows data: images)."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathFillImage, border=4)
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode("ascii")


def _grouped(secret: str) -> str:
    """The base32 secret in groups of four characters, easier to type by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@login_required
@sensitive_post_parameters("otp_token")
@never_cache
def otp_enrol(request):
    """Set up an authenticator: scan the QR code (or type the secret), then enter one code.

    The first correct code confirms the device and verifies this session. A person whose
    authenticator is already confirmed sees which one; replacing it is an administrator's job.
    """
    confirmed = list(TOTPDevice.objects.filter(user=request.user, confirmed=True))
    if confirmed:
        return render(request, "registration/otp_enrolled.html", {"devices": confirmed})

    device = second_factor_enrolment_start(user=request.user)
    form = DeviceConfirmForm(device, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        second_factor_enrolment_confirm(device=device)
        django_otp.login(request, device)
        messages.success(
            request, _("Your authenticator is set up. Use its codes to sign in from now on.")
        )
        return redirect(_safe_next(request) or settings.LOGIN_REDIRECT_URL)
    secret = base64.b32encode(device.bin_key).decode("ascii").rstrip("=")
    return render(
        request,
        "registration/otp_enrol.html",
        {
            "form": form,
            "qr_code": _qr_code_data_uri(device.config_url),
            "secret": _grouped(secret),
            "issuer": settings.OTP_TOTP_ISSUER,
            "next": _safe_next(request) or "",
        },
    )


@login_required
@never_cache
def api_tokens(request):
    """The person's API tokens, one per device: those that work, each with a button to revoke
    it (and one for all), and the latest of those that ended, with why. Never a token's value:
    that is shown once, to the client that asked for it."""
    tokens = api_tokens_of(request.user)
    now = timezone.now()
    return render(
        request,
        "registration/api_tokens.html",
        {
            "live_tokens": list(api_tokens_live(tokens, now=now)),
            "ended_tokens": list(api_tokens_ended(tokens, now=now)[:ENDED_TOKENS_SHOWN]),
            "nav_section": "api_tokens",
        },
    )


@login_required
@require_POST
def api_token_revoke_view(request, pk: int):
    """Revoke one of the person's API tokens; someone else's is not found."""
    try:
        token = api_token_revoke(
            user=request.user, token_id=pk, reason=ApiToken.RevokedReason.REVOKED_BY_USER
        )
    except ApiToken.DoesNotExist as exc:
        raise Http404 from exc
    messages.success(
        request,
        _("The token %(name)s (%(prefix)s…) no longer works.")
        % {"name": token.name, "prefix": token.prefix},
    )
    return redirect("api-tokens")


@login_required
@require_POST
def api_tokens_revoke_all_view(request):
    """Revoke every API token of the person, on every device."""
    revoked = api_tokens_revoke_all(
        user=request.user, reason=ApiToken.RevokedReason.REVOKED_BY_USER
    )
    messages.success(
        request,
        ngettext(
            "%(count)d token revoked: no device can use the API until it gets a new one.",
            "%(count)d tokens revoked: no device can use the API until it gets a new one.",
            revoked,
        )
        % {"count": revoked},
    )
    return redirect("api-tokens")


def locked_out(request, original_response=None, credentials=None):
    """django-axes' answer during a lockout: too many failed sign-ins for this username (from
    any address) or from this address (whatever the username).

    Every attempt during the lockout starts the cool-off again, so the answer names the time
    counted from now. Pages get the lockout page; the API (``/api/``, where the token endpoint
    counts failures too) gets the API's error shape, ``{"code": "locked_out", "detail",
    "retry_after"}``, with a ``Retry-After`` header in seconds.
    """
    cool_off = get_cool_off(request)
    seconds = max(1, math.ceil(cool_off.total_seconds()))
    if request.path.startswith(API_PATH_PREFIX):
        minutes = max(1, round(seconds / 60))
        detail = ngettext(
            "Too many failed sign-ins for this username or from this address. Try again in "
            "%(minutes)d minute; every attempt before then starts the wait again.",
            "Too many failed sign-ins for this username or from this address. Try again in "
            "%(minutes)d minutes; every attempt before then starts the wait again.",
            minutes,
        ) % {"minutes": minutes}
        response = JsonResponse(
            {"code": "locked_out", "detail": detail, "retry_after": seconds},
            status=settings.AXES_HTTP_RESPONSE_CODE,
            json_dumps_params={"ensure_ascii": False},
        )
        response["Retry-After"] = str(seconds)
        return response
    response = render(
        request,
        settings.AXES_LOCKOUT_TEMPLATE,
        {
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "cooloff_minutes": max(1, round(cool_off.total_seconds() / 60)),
            "retry_at": timezone.now() + cool_off,
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(seconds)
    return response
