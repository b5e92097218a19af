"""``manage.py create_api_token USERNAME [--scope watch|control] [--name NAME]``.

Prints what the token is for, then the token alone on the last line (for scripts:
``TOKEN=$(manage.py create_api_token alice | tail -1)``). It is shown this once: only its
digest is stored.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.tokens import issue_token
from realtime.vocabulary import Access


class Command(BaseCommand):
    help = "Create an API token for a user and print it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--scope", choices=[a.value for a in Access], default=Access.WATCH)
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, username: str, scope: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is not active")
        token, secret = issue_token(user=user, scope=scope, name=name)
        self.stderr.write(f"API token {token.prefix}… for {username}, scope {scope} "
                          "(shown once; only its digest is stored):")
        self.stdout.write(secret)
