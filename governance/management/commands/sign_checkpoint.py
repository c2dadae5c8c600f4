from django.core.management.base import BaseCommand, CommandError

from governance.checkpoints import ChainBroken, checkpoint_sign


class Command(BaseCommand):
    help = (
        "Sign a checkpoint of the audit chain's head with the checkpoint key (rule 11), unless "
        "the last checkpoint already covers it. Refuses, naming the break, if the chain does not "
        "verify."
    )

    def handle(self, *args, **options):
        try:
            checkpoint = checkpoint_sign()
        except ChainBroken as broken:
            raise CommandError(str(broken)) from broken
        if checkpoint is None:
            self.stdout.write("The audit chain is empty: nothing to sign.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Checkpoint of event #{checkpoint.sequence}, digest {checkpoint.digest}, "
                f"signed at {checkpoint.signed_at.isoformat()} under key {checkpoint.public_key}."
            )
        )
