"""Template context every page's layout needs: the funds in the navigation."""

from portfolio.models import FundRole
from portfolio.selectors import funds_for_user


def navigation(request) -> dict:
    """The signed-in user's funds for the menu and whether the audit log link shows.

    Evaluated lazily: a page that renders no menu (the sign-in page) costs no query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def funds():
        return list(funds_for_user(user).order_by("name"))

    def can_audit():
        return funds_for_user(user, roles=[FundRole.AUDIT]).exists()

    return {"nav_funds": funds, "nav_can_audit": can_audit}
