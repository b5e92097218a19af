"""Provider lookup: which implementation streams an agent's completion.

``settings.LLM_PROVIDER``, when set, overrides every agent's own provider, so
``LLM_PROVIDER=openai`` turns a scripted demo into a real run (and ``scripted`` the other
way round) without editing workflow files. Under the openai provider the model sent is
``settings.OPENAI_MODEL`` if set, else the agent's model; ``effective_model`` tells callers
(the engine, for usage and cost records) which model that is.
"""

from __future__ import annotations

from django.conf import settings

from workflows.providers.agui import AguiProvider
from workflows.providers.base import (
    Chunk,
    CompletionRequest,
    Provider,
    ProviderError,
    ToolCallDelta,
    Usage,
)
from workflows.providers.openai_compat import OpenAICompatProvider
from workflows.providers.scripted import ScriptedProvider
from workflows.vocabulary import ProviderName

__all__ = [
    "PROVIDER_NAMES",
    "Chunk",
    "CompletionRequest",
    "Provider",
    "ProviderError",
    "ToolCallDelta",
    "Usage",
    "effective_model",
    "effective_provider_name",
    "get_provider",
]

# Kept for existing imports; ``workflows.vocabulary.ProviderName`` is the one definition.
PROVIDER_NAMES = tuple(ProviderName)


def effective_provider_name(name: str) -> ProviderName:
    """``LLM_PROVIDER`` retargets the models we call, never a remote AG-UI agent (it is a
    participant with its own model, not a model of ours)."""
    if name != ProviderName.AGUI:
        name = settings.LLM_PROVIDER or name
    if name not in PROVIDER_NAMES:
        raise ValueError(f"unknown LLM provider {name!r} (known: {', '.join(PROVIDER_NAMES)})")
    return ProviderName(name)


def get_provider(name: str) -> Provider:
    effective = effective_provider_name(name)
    if effective == ProviderName.OPENAI:
        return OpenAICompatProvider()
    if effective == ProviderName.AGUI:
        return AguiProvider()
    return ScriptedProvider()


def effective_model(provider_name: str, model: str) -> str:
    """The model actually requested for an agent configured with (provider_name, model)."""
    if effective_provider_name(provider_name) == ProviderName.OPENAI:
        return settings.OPENAI_MODEL or model
    return model
