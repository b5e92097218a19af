"""The words a workflow file uses, each defined once.

``realtime.vocabulary`` holds the words of the meeting protocol (events, commands, statuses,
review decisions); these are the ones only the workflow layer knows: which kinds of node a
workflow has and which providers can answer for an agent. They are ``StrEnum`` members, so
they compare equal to, hash like and serialise as their values: a definition stored as JSON
or a setting such as ``LLM_PROVIDER=openai`` needs no conversion.
"""

from __future__ import annotations

from enum import StrEnum


class NodeType(StrEnum):
    """What a workflow node does (``nodes[].type``)."""

    AGENT = "agent"
    HUMAN_REVIEW = "human_review"


class ProviderName(StrEnum):
    """Which implementation streams an agent's answer (``agents.<id>.provider``)."""

    SCRIPTED = "scripted"
    OPENAI = "openai"
