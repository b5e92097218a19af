"""What every LLM provider streams, and the one token-counting rule shared by all of them.

The engine only sees this interface, so the scripted provider (offline, deterministic) and
a real OpenAI-compatible server are interchangeable per agent or by one setting.

Token rule (used by the scripted provider, as the live estimate while a call streams, and
as the estimate when a real server reports no usage): a token is one whitespace-separated
word plus the whitespace that follows it. ``input_tokens`` is the number of
whitespace-separated words in the system prompt plus all message contents; ``output_tokens``
is the number of words streamed (thinking + answer + tool-call arguments).

Token types: ``cached_input_tokens`` and ``cache_write_tokens`` are part of
``input_tokens``, ``reasoning_tokens`` part of ``output_tokens`` (never added on top); a type
the server does not report is 0, never guessed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workflows.definitions import AguiSpec

from realtime.protocol import TOKEN_FIELDS
from realtime.vocabulary import TokenType

__all__ = ["TOKEN_FIELDS"]  # re-exported: the engine and services name usage fields by it


@dataclass(frozen=True)
class Chunk:
    text: str
    is_thinking: bool


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call the model is making: the first piece of call ``index`` names
    the tool; later pieces add to its arguments (JSON text, streamed in fragments)."""

    index: int
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens: written to the provider's prompt cache
    reasoning_tokens: int = 0  # of output_tokens: the model's reasoning
    # True when the server sent no usage and the numbers come from the word-count rule.
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        """Usage of several model calls (a round with tool calls) is their sum, type by type."""
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in TOKEN_FIELDS},
                     estimated=self.estimated or other.estimated)

    def by_type(self) -> dict[TokenType, int]:
        return {kind: getattr(self, f"{kind}_tokens") for kind in TokenType}


NO_USAGE = Usage(0, 0)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system: str
    # Chat messages; besides user/assistant text, an assistant turn may carry ``tool_calls``
    # ([{"id", "name", "arguments"}]) and a ``tool`` turn answers one (``tool_call_id``).
    messages: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    node_id: str = ""
    agent_id: str = ""
    # Tools the model may call now: [{"name", "description", "parameters"}] (JSON schema).
    tools: tuple[dict[str, Any], ...] = ()
    # The remote AG-UI endpoint of an ``agui`` agent (workflows/providers/agui.py).
    agui: AguiSpec | None = None


class ProviderError(Exception):
    """A failed completion. ``message`` is short and safe to show to users (no secrets);
    ``retryable`` says whether the failure was transient (a later attempt may succeed)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    """``stream`` is an async generator: Chunks and ToolCallDeltas, then exactly one Usage.

    Cancelling the consuming task must stop it promptly and release any connection.
    """

    name: str

    def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk | ToolCallDelta | Usage]: ...


def word_count(text: str) -> int:
    return len(text.split())


class WordCounter:
    """The token rule over a text that arrives in pieces (a stream), without keeping it: a
    word cut across two pieces ("Hel", "lo ") counts once. The live output estimate."""

    def __init__(self) -> None:
        self.words = 0
        self._inside = False  # the last piece ended inside a word

    def add(self, text: str) -> None:
        if not text:
            return
        count = len(text.split())
        if count and self._inside and not text[0].isspace():
            count -= 1
        self.words += count
        self._inside = not text[-1].isspace()


def input_tokens(request: CompletionRequest) -> int:
    """Words of the system prompt and of every message, tool calls' arguments included."""
    total = word_count(request.system)
    for message in request.messages:
        total += word_count(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            total += word_count(call.get("arguments") or "")
    return total
