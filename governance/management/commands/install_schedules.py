"""``manage.py install_schedules``: put the periodic tasks both apps declare in code into
django-celery-beat's tables, where the admin can edit them. It lives in governance, the app
that may import both apps' schedules."""

from django.core.management.base import BaseCommand

from governance.schedules import schedules_install


class Command(BaseCommand):
    help = (
        "Install the periodic tasks into the beat database. Existing schedules keep "
        "the interval an administrator gave them unless --reset."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="Put existing schedules back to the defaults."
        )

    def handle(self, *args, **options):
        for name, what in schedules_install(reset=options["reset"]):
            self.stdout.write(f"{name}: {what}")
