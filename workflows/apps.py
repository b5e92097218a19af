"""The workflows app: its start-up check of the workflow files.

A broken workflow file is a deployment error, not a runtime one: without this check it
would only show when someone starts a session with it (or opens the list of workflows).
As a Django system check it stops ``runserver``, ``migrate``, ``manage.py check`` and every
other command that runs the checks, with the file, node and field in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from workflows import tracing
from workflows.definitions import DefinitionError, validate_all


def check_workflow_definitions(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[checks.Error]:
    """``workflows.E001``: every file in ``WORKFLOW_DIR`` loads (and there is at least one)."""
    if app_configs is not None and apps.get_app_config("workflows") not in app_configs:
        return []  # ``manage.py check <other apps>``
    try:
        validate_all()
    except DefinitionError as exc:
        return [
            checks.Error(
                str(exc),
                hint="Fix the workflow file (the format is described in workflows/definitions/__init__.py).",
                id="workflows.E001",
            )
        ]
    return []


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        # Tagged so ``manage.py check --tag workflows`` runs it alone (no database needed).
        checks.register(check_workflow_definitions, "workflows")
        # Opt-in traces (workflows.tracing): a setting it cannot honour stops the start-up.
        try:
            tracing.configure_from_env()
        except tracing.TracingConfigError as exc:
            raise ImproperlyConfigured(f"OpenTelemetry tracing: {exc}") from None
