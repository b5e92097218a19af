"""System checks of prices: a model that would run without a price, and the deprecated
``EXTRA_MODEL_PRICES``.

A model without a known price runs (its cost shows as "price unknown"), so it is a warning,
not an error: the operator adds its price in the admin, and the check stops listing it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks

from sessions_app.prices import unpriced_models
from workflows.definitions import DefinitionError, list_workflows
from workflows.pricing import EXTRA_PRICES_SETTING, check_extra_prices


def check_prices(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``sessions_app.W001``: models with no price; ``W002``: EXTRA_MODEL_PRICES is set;
    ``E002``: EXTRA_MODEL_PRICES cannot be read."""
    if app_configs is not None and apps.get_app_config("sessions_app") not in app_configs:
        return []
    messages: list[checks.CheckMessage] = []
    if os.environ.get(EXTRA_PRICES_SETTING):
        messages.append(checks.Warning(
            f"{EXTRA_PRICES_SETTING} is deprecated and will be removed in the next release",
            hint="Add the prices in the admin (Meeting sessions > Model prices), per token type "
            "and with the date they apply from, then unset the variable.",
            id="sessions_app.W002",
        ))
    try:
        definitions = list_workflows()
    except DefinitionError:
        return messages  # workflows.E001 says what is wrong
    try:
        check_extra_prices()
    except ValueError as exc:
        messages.append(checks.Error(str(exc), hint="Fix or unset it (it is ignored meanwhile).",
                                     id="sessions_app.E002"))
    missing = unpriced_models(definitions, extra=[settings.OPENAI_MODEL] if settings.OPENAI_MODEL else [])
    for model, where in sorted(missing.items()):
        messages.append(checks.Warning(
            f"model {model!r} has no known price (used by {', '.join(where)}): its runs show "
            "\"price unknown\" instead of a cost and are not held by a budget",
            hint="Add its price in the admin (Meeting sessions > Model prices), or check the "
            "model's name against genai-prices.",
            id="sessions_app.W001",
        ))
    return messages
