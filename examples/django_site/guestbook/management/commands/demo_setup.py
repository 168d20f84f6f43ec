"""`manage.py demo_setup`: everything the site needs before it is served.

Migrates the database, creates (or resets) the demo admin user and prints
its credentials, creates MEDIA_ROOT, and collects static files into
STATIC_ROOT with hashed names. Safe to run again.
"""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, create the demo admin user and collect static files."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_ADMIN_USER", "admin"))
        parser.add_argument(
            "--password", default=os.environ.get("DEMO_ADMIN_PASSWORD", "tandem-demo")
        )
        parser.add_argument("--skip-static", action="store_true", help="don't run collectstatic")

    def handle(self, *args, username, password, skip_static, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        # tandem's --static /media/=media wants the directory to exist before
        # the first upload creates it.
        os.makedirs(settings.MEDIA_ROOT, exist_ok=True)
        if not skip_static:
            call_command("collectstatic", interactive=False, verbosity=0)
            self.stdout.write("static files collected (hashed names)")
        self.stdout.write(
            self.style.SUCCESS(
                f"demo admin user {'created' if created else 'reset'}: "
                f"username {username!r}, password {password!r}"
            )
        )
