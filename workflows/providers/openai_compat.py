"""A real LLM through any OpenAI-compatible chat-completions server (OpenAI, DeepSeek,
vLLM, Ollama, ...), streamed with the official ``openai`` package.

Configuration is read from settings on every call: ``OPENAI_BASE_URL`` (empty = OpenAI),
``OPENAI_API_KEY``, ``OPENAI_MODEL`` (when set it replaces every agent's model),
``LLM_TIMEOUT_SECONDS`` (connect/read timeout, i.e. also the longest silence allowed
between two streamed chunks) and ``LLM_MAX_RETRIES``. One client is created per stream
and closed with it, so nothing is shared across event loops or threads.

Answer text comes from ``delta.content``; DeepSeek-style ``delta.reasoning_content`` is
streamed as thinking chunks. Usage comes from the final chunk (requested with
``stream_options.include_usage``), by token type: ``prompt_tokens`` (all input, cached
included), ``prompt_tokens_details.cached_tokens`` and ``.cache_write_tokens``,
``completion_tokens`` (all output, reasoning included) and
``completion_tokens_details.reasoning_tokens``, read with genai-prices' extractor for the
OpenAI chat shape (the same mapping its prices are keyed by); a type the server does not
report is 0. If the server sends no usage, it is estimated with the word rule of
``workflows.providers.base`` and the Usage is marked ``estimated=True``. Each
yielded Chunk is one server delta, not one word. Tools offered (``request.tools``) are sent
as ``tools``; the model's ``delta.tool_calls`` are yielded as ToolCallDeltas, and the
tool calls and results of earlier turns go back as assistant ``tool_calls`` and ``tool``
messages. Options used: ``max_tokens`` and
``temperature``; the scripted-only options are ignored.

Retry policy: the SDK's own retries are off (``max_retries=0``) so the policy lives here.
A failure is retried only if nothing has been yielded yet, and only for connection errors,
timeouts, HTTP 429 and HTTP 5xx, at most ``LLM_MAX_RETRIES`` times, sleeping
``backoff_base * 2**attempt`` seconds (0.5 s, 1 s, 2 s, ... by default) before retry
``attempt + 1``. When retries are exhausted the ProviderError keeps ``retryable=True`` (the
failure was transient). Any failure after the first chunk was yielded, and any 4xx other
than 429, raises ``ProviderError(retryable=False)`` at once: a half-streamed answer cannot
be resumed, and a bad request will not get better. Every ``openai`` exception becomes a
ProviderError with a short message from which the API key is scrubbed. Cancelling the
consuming task closes the HTTP stream and the client before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
from django.conf import settings
from genai_prices import data_snapshot

from workflows.providers.base import (
    Chunk,
    CompletionRequest,
    ProviderError,
    ToolCallDelta,
    Usage,
    input_tokens,
    word_count,
)
from workflows.vocabulary import ProviderName

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5
_SECRET_RE = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9_\-*.]+")
_MAX_MESSAGE = 200


def effective_model(model: str) -> str:
    """``OPENAI_MODEL`` wins over the workflow's model, so one setting retargets a run."""
    return settings.OPENAI_MODEL or model


def _scrub(text: str) -> str:
    key = settings.OPENAI_API_KEY
    if key:
        text = text.replace(key, "***")
    text = _SECRET_RE.sub(r"\1***", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str) and message.strip():
            return _scrub(message)
    return ""


def to_provider_error(exc: Exception, *, streamed: bool) -> ProviderError:
    """Map any exception from the SDK to a user-safe ProviderError.

    ``streamed`` = chunks were already yielded, which makes every failure final.
    """
    if isinstance(exc, ProviderError):
        return exc
    when = " mid-stream" if streamed else ""
    if isinstance(exc, openai.APITimeoutError):
        message, retryable = f"LLM server timed out{when}", True
    elif isinstance(exc, openai.APIConnectionError):
        lost = "lost" if streamed else "failed"
        message, retryable = f"connection to the LLM server {lost}", True
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _server_message(exc)
        if status == 429:
            message, retryable = "LLM server rate limit reached (HTTP 429)", True
        elif status >= 500:
            message, retryable = f"LLM server error (HTTP {status})", True
        elif status in (401, 403):
            message, retryable = f"LLM server refused the API key (HTTP {status})", False
        else:
            message = f"LLM request rejected (HTTP {status})" + (f": {detail}" if detail else "")
            retryable = False
    elif isinstance(exc, openai.APIError):
        message = "LLM server reported an error" + (f": {_scrub(exc.message)}" if exc.message else "")
        retryable = False
    else:
        message, retryable = f"unexpected LLM provider error ({type(exc).__name__})", False
    return ProviderError(message, retryable=retryable and not streamed)


def server_usage(raw: Any) -> Usage:
    """The server's usage, by type (see the module docstring)."""
    data = raw.model_dump(exclude_none=True) if hasattr(raw, "model_dump") else dict(raw)
    extractor = data_snapshot.get_snapshot().find_provider(None, "openai", None)
    try:
        _, found = extractor.extract_usage({"usage": data}, api_flavor="chat")
    except ValueError:  # no prompt_tokens or completion_tokens: what there is, no types
        return Usage(input_tokens=int(data.get("prompt_tokens") or 0),
                     output_tokens=int(data.get("completion_tokens") or 0))
    count = found.reported_value
    return Usage(
        input_tokens=int(count("input_tokens")), output_tokens=int(count("output_tokens")),
        cached_input_tokens=int(count("cache_read_tokens")),
        cache_write_tokens=int(count("cache_write_tokens")),
        reasoning_tokens=int(count("output_reasoning_tokens")),
    )


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """One of our chat messages in the chat-completions shape (tool calls and results too)."""
    if message.get("tool_calls"):
        return {
            "role": "assistant",
            "content": message.get("content") or None,
            "tool_calls": [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}}
                for call in message["tool_calls"]
            ],
        }
    if message["role"] == "tool":
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]}
    return {"role": message["role"], "content": message["content"]}


def _request_kwargs(request: CompletionRequest, model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(_message(m) for m in request.messages)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        kwargs["tools"] = [
            {"type": "function", "function": {
                "name": tool["name"], "description": tool["description"],
                "parameters": tool["parameters"]}}
            for tool in request.tools
        ]
    if request.options.get("max_tokens"):
        kwargs["max_tokens"] = int(request.options["max_tokens"])
    if request.options.get("temperature") is not None:
        kwargs["temperature"] = float(request.options["temperature"])
    return kwargs


def _pieces(chunk: Any) -> list[Chunk | ToolCallDelta]:
    pieces: list[Chunk | ToolCallDelta] = []
    for choice in chunk.choices or ():
        delta = choice.delta
        if delta is None:
            continue
        reasoning = getattr(delta, "reasoning_content", None)
        if reasoning is None and delta.model_extra:
            reasoning = delta.model_extra.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            pieces.append(Chunk(reasoning, True))
        if delta.content:
            pieces.append(Chunk(delta.content, False))
        for call in delta.tool_calls or ():
            function = call.function
            pieces.append(ToolCallDelta(
                index=call.index,
                name=(function.name if function is not None else None) or None,
                arguments=(function.arguments if function is not None else None) or "",
            ))
    return pieces


class OpenAICompatProvider:
    name = ProviderName.OPENAI

    def __init__(self, *, backoff_base: float | None = None) -> None:
        self.backoff_base = BACKOFF_BASE_SECONDS if backoff_base is None else backoff_base

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=settings.OPENAI_BASE_URL or None,
            api_key=settings.OPENAI_API_KEY or "not-set",
            timeout=settings.LLM_TIMEOUT_SECONDS,
            max_retries=0,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk | ToolCallDelta | Usage]:
        model = effective_model(request.model)
        max_retries = max(0, int(settings.LLM_MAX_RETRIES))
        kwargs = _request_kwargs(request, model)
        streamed_text: list[str] = []
        usage: Usage | None = None
        client = self._client()
        try:
            attempt = 0
            while True:
                try:
                    response = await client.chat.completions.create(**kwargs)
                    try:
                        async for chunk in response:
                            if chunk.usage is not None:
                                usage = server_usage(chunk.usage)
                            for piece in _pieces(chunk):
                                streamed_text.append(
                                    piece.text if isinstance(piece, Chunk) else piece.arguments
                                )
                                yield piece
                    finally:
                        await response.close()
                    break
                except Exception as exc:  # every SDK/transport error becomes a ProviderError
                    error = to_provider_error(exc, streamed=bool(streamed_text))
                    if not error.retryable or attempt >= max_retries:
                        logger.warning(
                            "LLM call failed for node %s (model %s, attempt %d): %s",
                            request.node_id,
                            model,
                            attempt + 1,
                            error.message,
                        )
                        raise error from None
                    delay = self.backoff_base * 2**attempt
                    logger.info(
                        "LLM call for node %s failed (%s); retry %d/%d in %.2fs",
                        request.node_id,
                        error.message,
                        attempt + 1,
                        max_retries,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
        finally:
            await client.close()
        if usage is None:
            logger.info("LLM server sent no usage for node %s; estimating", request.node_id)
            usage = Usage(
                input_tokens=input_tokens(request),
                output_tokens=word_count("".join(streamed_text)),
                estimated=True,
            )
        yield usage
