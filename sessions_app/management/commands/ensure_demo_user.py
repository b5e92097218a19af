"""Create (once) the demo login of the embedded set-up and print how to sign in."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create the 'demo' superuser if missing and print its login."

    def add_arguments(self, parser: CommandParser) -> None:
        # bin/serve passes the address it is about to serve on (its HOST and PORT)
        parser.add_argument("--host", default="127.0.0.1", help="host the server listens on")
        parser.add_argument("--port", default="8000", help="port the server listens on")

    def handle(self, *args: Any, **options: Any) -> None:
        password_file = settings.VAR_DIR / "demo-password.txt"
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(9)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        user, created = get_user_model().objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.save()
        self.stdout.write(
            f"\n  Meeting room: http://{options['host']}:{options['port']}/   (admin: /admin/)\n"
            f"  Log in as:    demo / {password}\n"
        )
