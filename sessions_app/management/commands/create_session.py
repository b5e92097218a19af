"""Create a session from a script: prints one JSON object (id, url, ws_url, ...)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_app import services
from workflows.definitions import DefinitionError


class Command(BaseCommand):
    help = "Create a meeting session for a workflow and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", required=True, help="workflow slug, e.g. demo")
        parser.add_argument("--owner", required=True, help="username of the owner")
        parser.add_argument("--title", default="", help="session title")
        parser.add_argument("--start", action="store_true", help="queue the run at once")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="origin used in url and ws_url"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["owner"]).first()
        if user is None:
            raise CommandError(f"no user {options['owner']!r}")
        try:
            session = services.session_create(
                owner=user, workflow_slug=options["workflow"], title=options["title"]
            )
        except DefinitionError as exc:
            raise CommandError(str(exc)) from exc
        if options["start"]:
            services.session_start(session_id=str(session.pk), user=user)
        base = options["base_url"].rstrip("/")
        ws_base = "ws" + base[4:] if base.startswith("http") else base
        result = {
            "id": str(session.pk),
            "title": session.title,
            "workflow": session.workflow_slug,
            "status": session.status,
            "url": base + session.get_absolute_url(),
            "ws_url": f"{ws_base}/ws/sessions/{session.pk}/",
            "executor": settings.WORKFLOW_EXECUTOR,
        }
        self.stdout.write(json.dumps(result))
