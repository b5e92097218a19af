"""The words of running a workflow, each defined once (``str`` enums; ``TextChoices`` where
the app that owns sessions stores them)."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class ReviewStatus(models.TextChoices):
    """One round of a human review."""

    PENDING = "pending"
    DECIDED = "decided"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class NodeType(models.TextChoices):
    """What a node of a workflow does (stored on each node state)."""

    AGENT = "agent"
    HUMAN_REVIEW = "human_review"


class ProviderName(StrEnum):
    """Which implementation streams an agent's answers."""

    SCRIPTED = "scripted"
    OPENAI = "openai"
