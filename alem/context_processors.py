"""Template context every page's layout needs: the funds in the navigation."""

from dataclasses import dataclass

from governance.selectors import request_fund_names, request_roles
from portfolio.models import FundRole


@dataclass(frozen=True)
class NavFund:
    pk: int
    name: str


def navigation(request) -> dict:
    """The signed-in user's funds for the menu and whether the audit log link shows.

    Evaluated lazily: a page that renders no menu (the sign-in page) costs no query; the funds,
    their names included, are the page's own roles (``request_roles``), so the menu costs none."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def funds():
        names = request_fund_names(request)
        return sorted((NavFund(pk, name) for pk, name in names.items()), key=lambda f: f.name)

    def can_audit():
        return any(FundRole.AUDIT in held for held in request_roles(request).values())

    return {"nav_funds": funds, "nav_can_audit": can_audit}
