"""Template context every page's layout needs: the funds in the navigation."""

from governance.selectors import request_roles
from portfolio.models import Fund, FundRole


def navigation(request) -> dict:
    """The signed-in user's funds for the menu and whether the audit log link shows.

    Evaluated lazily: a page that renders no menu (the sign-in page) costs no query; the roles
    are the page's own (``request_roles``), so the menu adds one query, for the funds' names."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def funds():
        return list(Fund.objects.filter(pk__in=request_roles(request)).order_by("name"))

    def can_audit():
        return any(FundRole.AUDIT in held for held in request_roles(request).values())

    return {"nav_funds": funds, "nav_can_audit": can_audit}
