"""People who decide or execute must have an authenticator before they use the site."""

from django.conf import settings
from django.shortcuts import redirect

from governance.second_factor import STEP_UP_ROLES, has_confirmed_device
from portfolio.selectors import funds_for_user


def holds_deciding_role(request) -> bool:
    """Whether the signed-in user decides or executes on any fund; asked once per request.

    Without a device such a person could sign in but never act, so they enrol first."""
    if not hasattr(request, "_alem_holds_deciding_role"):
        request._alem_holds_deciding_role = funds_for_user(
            request.user, roles=list(STEP_UP_ROLES)
        ).exists()
    return request._alem_holds_deciding_role


class SecondFactorEnrolmentMiddleware:
    """Send a decider or treasury operator without a confirmed authenticator to enrol one.

    Every page redirects to the enrolment page except the ones that must stay reachable:
    enrolment itself, sign-in and sign-out, the language switch, static files, the API (which
    answers ``second_factor_required`` on its own) and the back office (which asks for a
    verified session on its own). A session verified by a code proves a confirmed device, so
    the usual case costs no query here beyond the device lookup django-otp already makes; an
    unverified session costs the role query and, for deciders, the device query.

    Goes after ``django_otp.middleware.OTPMiddleware``.
    """

    # Pages reachable without an authenticator, by URL name (the enrolment page and the way in
    # and out) and by path (the language switch, static files, the API and the back office).
    EXEMPT_URL_NAMES = frozenset({"otp-enrol", "login", "logout"})
    EXEMPT_PREFIXES = (
        "/i18n/",
        "/" + settings.STATIC_URL.lstrip("/"),
        "/api/",
        "/admin/",
        "/health/",
    )

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # After URL resolution, so a page is known by its name whatever the URLconf.
        if self.must_enrol(request):
            return redirect("otp-enrol")
        return None

    def must_enrol(self, request) -> bool:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return False
        match = request.resolver_match
        if match is not None and match.view_name in self.EXEMPT_URL_NAMES:
            return False
        if request.path_info.startswith(self.EXEMPT_PREFIXES):
            return False
        if getattr(user, "is_verified", lambda: False)():
            return False
        return holds_deciding_role(request) and not has_confirmed_device(user)
