"""Write static/js/vocabulary.js from realtime/vocabulary.py (``--check``: fail when it is stale)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime import vocabulary_js


class Command(BaseCommand):
    help = "Write static/js/vocabulary.js, the browser's copy of the protocol's words."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="write nothing; exit 1 when the file is not current"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = vocabulary_js.JS_PATH
        text = vocabulary_js.render()
        current = path.read_text() if path.exists() else None
        if options["check"]:
            if current != text:
                raise CommandError(f"{path} is stale: run `manage.py export_vocabulary`")
            self.stdout.write(f"{path} is current")
            return
        if current != text:
            path.write_text(text)
        self.stdout.write(f"wrote {path}")
