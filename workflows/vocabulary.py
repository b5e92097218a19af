"""The words of running a workflow, each defined once.

``realtime.vocabulary`` holds the words of the meeting protocol (events, commands, statuses,
review decisions); these are the ones only the workflow layer knows: which kinds of node a
providers can answer for an agent and where a human review stands (the kinds of node are
``realtime.vocabulary.NodeType``: the room's snapshot carries them). They are
``str`` enums (Django ``TextChoices`` where the app that owns sessions stores them), so they
compare equal to, hash like and serialise as their values: a definition stored as JSON or a
setting such as ``LLM_PROVIDER=openai`` needs no conversion.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class ProviderName(StrEnum):
    """Which implementation streams an agent's answer (``agents.<id>.provider``)."""

    SCRIPTED = "scripted"
    OPENAI = "openai"
    # A remote agent behind an AG-UI endpoint (``agents.<id>.agui``): it runs its own model
    # and tools; the engine relays what it streams (workflows/providers/agui.py).
    AGUI = "agui"


class ReviewStatus(models.TextChoices):
    """One round of a human review."""

    PENDING = "pending"
    DECIDED = "decided"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
