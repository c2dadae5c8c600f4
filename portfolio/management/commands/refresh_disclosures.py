"""Rebuild every disclosing fund's public document now (``portfolio.disclosure``)."""

from django.core.management.base import BaseCommand

from portfolio.disclosure import disclosures_refresh


class Command(BaseCommand):
    help = "Rebuild what each disclosing fund's public pages show, up to its disclosure delay."

    def handle(self, *args, **options):
        built = disclosures_refresh()
        self.stdout.write(f"Public disclosures built: {built}")
