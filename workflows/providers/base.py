"""What every LLM provider streams, and the one token-counting rule shared by all of them.

The engine only sees this interface, so the scripted provider (offline, deterministic) and
a real OpenAI-compatible server are interchangeable per agent or by one setting.

Token rule (used by the scripted provider, and as the estimate when a real server reports
no usage): a token is one whitespace-separated word plus the whitespace that follows it.
``input_tokens`` is the number of whitespace-separated words in the system prompt plus all
message contents; ``output_tokens`` is the number of streamed tokens (thinking + answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Chunk:
    text: str
    is_thinking: bool


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    # True when the server sent no usage and the numbers come from the word-count rule.
    estimated: bool = False


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system: str
    messages: list[dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)
    node_id: str = ""
    agent_id: str = ""


class ProviderError(Exception):
    """A failed completion. ``message`` is short and safe to show to users (no secrets);
    ``retryable`` says whether the failure was transient (a later attempt may succeed)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    """``stream`` is an async generator: Chunks, then exactly one Usage last.

    Cancelling the consuming task must stop it promptly and release any connection.
    """

    name: str

    def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk | Usage]: ...


def word_count(text: str) -> int:
    return len(text.split())


def input_tokens(request: CompletionRequest) -> int:
    return word_count(request.system) + sum(
        word_count(message.get("content") or "") for message in request.messages
    )
