"""Print a demo user's current one-time code (development only).

The demo seeds an authenticator for every user; to walk through the demo without adding a
dozen accounts to a phone app, this command computes the code the user's device shows now.
That is exactly what an attacker with the server's database would want, so it refuses to run
unless DEBUG is on: on a real deployment (DEBUG off) codes come only from people's phones.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Print USERNAME's current one-time code from their authenticator (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        if not settings.DEBUG:
            raise CommandError(
                "otp_code only runs with DEBUG on: it is a demo aid, and outside development "
                "one-time codes must come from the person's own authenticator."
            )
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        device = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()
        if device is None:
            raise CommandError(
                f"{username} has no confirmed authenticator; run seed_demo or enrol one."
            )
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        self.stdout.write(f"{totp.token():0{device.digits}d}")
        if options["verbosity"] >= 2:
            self.stderr.write(
                "Each code works once; if this one was used already, wait for the next "
                f"{device.step}-second step."
            )
