from django.core.management.base import BaseCommand

from chat.conversations import sync_from_store


class Command(BaseCommand):
    help = "Rebuild the sidebar metadata from the transcript store (idempotent)."

    def handle(self, **options):
        count = sync_from_store(self.stdout.write)
        self.stdout.write(self.style.SUCCESS(f"{count} conversations synchronised."))
