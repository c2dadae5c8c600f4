from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.services import role_grant, role_revoke
from governance.services.back_office import command_via
from portfolio.models import Fund, FundRole


class Command(BaseCommand):
    help = (
        "Grant (or with --revoke, revoke) a fund role: grant_role USERNAME ROLE FUND_SLUG. The "
        "server operator's bootstrap path, audited with no actor; in the back office a grant "
        "needs a second site administrator."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", choices=FundRole.values)
        parser.add_argument("fund_slug")
        parser.add_argument("--revoke", action="store_true", help="Revoke instead of grant.")

    def handle(self, *, username, role, fund_slug, revoke, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        fund = Fund.objects.filter(slug=fund_slug).first()
        if fund is None:
            raise CommandError(f"No fund with slug {fund_slug!r}.")
        # Recorded with no actor: the payload names the command and the operating-system user.
        via = command_via("grant_role")
        if revoke:
            changed = role_revoke(actor=None, user=user, fund=fund, role=role, via=via)
        else:
            changed = role_grant(user=user, fund=fund, role=role, via=via)
        verb = "revoked from" if revoke else "granted to"
        if changed:
            self.stdout.write(self.style.SUCCESS(f"{role} on {fund.slug} {verb} {username}."))
        else:
            state = "did not hold" if revoke else "already holds"
            self.stdout.write(f"Nothing to do: {username} {state} {role} on {fund.slug}.")
