"""A remote agent behind an AG-UI endpoint, as a provider: the meeting so far goes out as a
``RunAgentInput``, the agent's AG-UI events come back and are streamed as our items.

Why a provider and not a node kind: to the engine a remote agent is one more source of text,
reasoning and usage, and everything an agent node does around that (pause at chunk
boundaries, stop, checkpoints, reviews sending it back, usage and cost) applies unchanged.
What an LLM provider never streams, the remote agent's own tool calls and its interrupts,
comes out as two more item types (``RemoteToolCall``, ``RemoteInterrupt``) that the agent
executor hands to ``workflows.nodes.remote`` (relayed as our tool-call events and reviews;
no tool runs here).

Every message in and out is one of the official ``ag-ui-protocol`` models (``ag_ui.core``):
the request is built from them (``agui_messages``), and every SSE event is parsed with the
protocol's ``Event`` union; one that does not parse fails the node. Mapping:

- ``TEXT_MESSAGE_CONTENT`` (and ``TEXT_MESSAGE_CHUNK``) -> ``Chunk``; a new text message after
  some text starts a new paragraph;
- ``REASONING_MESSAGE_CONTENT`` (and ``REASONING_MESSAGE_CHUNK``) -> thinking ``Chunk``;
- ``TOOL_CALL_START/ARGS/END/RESULT`` -> ``RemoteToolCall`` steps;
- ``RUN_FINISHED``: its ``usage`` entries are summed (over every run of the round); an interrupt
  outcome -> ``RemoteInterrupt``, whose answers go back as a new ``RunAgentInput`` carrying
  ``resume`` and the conversation the remote agent streamed (client-held history, as AG-UI
  clients do);
- ``RUN_ERROR`` -> ``ProviderError``; every other event (state, steps, custom, activity, raw,
  snapshots) is accepted and not relayed.

Doors (issue #18): the host must be in ``AGUI_AGENT_ALLOWED_HOSTS``; redirects are not
followed; proxies from the environment are not used; each response is bounded by
``AGUI_AGENT_MAX_RESPONSE_BYTES`` and each silence by ``AGUI_AGENT_TIMEOUT_SECONDS``. Header
values may name environment variables (``${AGUI_TOKEN}``), resolved for each call, never
stored resolved; every error names the endpoint as host and path only, and has any header
value scrubbed from it. Cancelling the consumer closes the HTTP response.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx2
from ag_ui.core import (
    Event,
    EventType,
    ResumeEntry,
    RunAgentInput,
)
from django.conf import settings
from pydantic import TypeAdapter, ValidationError

from workflows import hosts
from workflows.definitions.models import ENV_REFERENCE_RE
from workflows.providers.agui_messages import (
    Conversation,
    content_text,
    meeting_messages,
    resume_entry,
)
from workflows.providers.base import (
    Chunk,
    CompletionRequest,
    ProviderError,
    Usage,
    input_tokens,
    word_count,
)
from workflows.vocabulary import ProviderName

MAX_INTERRUPTS = 10  # answered interrupts per round: a remote agent cannot loop forever
_MAX_DETAIL = 200
_EVENT = TypeAdapter(Event)


class CallStep(StrEnum):
    START = "start"
    ARGS = "args"
    END = "end"
    RESULT = "result"


@dataclass(frozen=True)
class RemoteToolCall:
    """A step of a tool call the remote agent makes and runs itself (relayed, never run)."""

    remote_id: str
    step: CallStep
    name: str = ""
    text: str = ""  # an arguments fragment (ARGS) or the result (RESULT)


@dataclass(frozen=True)
class InterruptAsk:
    id: str
    reason: str
    message: str
    tool_call_id: str | None


@dataclass
class RemoteInterrupt:
    """The remote run ended asking a person. The engine fills ``answers`` (interrupt id ->
    (approved, comment)) before it asks for the next item; an unanswered one is cancelled."""

    asks: tuple[InterruptAsk, ...]
    answers: dict[str, tuple[bool, str]] = field(default_factory=dict)


def endpoint_label(url: str) -> str:
    """How errors and the room name an endpoint: host, port and path; never userinfo or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


def host_allowed(url: str) -> bool:
    """``AGUI_AGENT_ALLOWED_HOSTS`` (``workflows.hosts``)."""
    return hosts.host_allowed(url, settings.AGUI_AGENT_ALLOWED_HOSTS)


def resolve_headers(headers: tuple[tuple[str, str], ...], label: str) -> dict[str, str]:
    """Header values with ``${NAME}`` replaced by the environment's value, for this call only."""
    resolved: dict[str, str] = {}
    for name, value in headers:
        def lookup(match: Any, header: str = name) -> str:
            variable = match.group(1)
            if variable not in os.environ:
                raise ProviderError(
                    f"remote agent {label}: header {header}: environment variable "
                    f"{variable} is not set"
                )
            return os.environ[variable]

        resolved[name] = ENV_REFERENCE_RE.sub(lookup, value)
    return resolved


@dataclass
class _RunResult:
    finished: bool = False
    interrupts: tuple[InterruptAsk, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    reported: bool = False


class AguiProvider:
    name = ProviderName.AGUI

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Any]:
        spec = request.agui
        if spec is None:
            raise ProviderError("a remote AG-UI agent needs an agui endpoint")
        label = endpoint_label(spec.url)
        if not host_allowed(spec.url):
            raise ProviderError(
                f"remote agent {label}: host not allowed (add it to AGUI_AGENT_ALLOWED_HOSTS)"
            )
        headers = resolve_headers(spec.headers, label)
        call = _Call(url=spec.url, label=label, headers=headers)
        conversation = Conversation()
        thread_id = f"{request.node_id or 'agent'}-{uuid.uuid4().hex}"
        first = meeting_messages(request)
        resume: list[ResumeEntry] | None = None
        total = _RunResult()
        streamed: list[str] = []
        timeout = settings.AGUI_AGENT_TIMEOUT_SECONDS
        async with httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout), follow_redirects=False, trust_env=False
        ) as client:
            for _ in range(MAX_INTERRUPTS + 1):
                run_input = RunAgentInput(
                    thread_id=thread_id, run_id=uuid.uuid4().hex,
                    messages=[*first, *conversation.messages], tools=[], context=[], state={},
                    forwarded_props={}, resume=resume,
                )
                result = _RunResult()
                async for item in call.run(client, run_input, conversation, result):
                    if isinstance(item, Chunk):
                        streamed.append(item.text)
                    yield item
                total.input_tokens += result.input_tokens
                total.output_tokens += result.output_tokens
                total.reported = total.reported or result.reported
                if not result.interrupts:
                    break
                ask = RemoteInterrupt(asks=result.interrupts)
                yield ask
                resume = [resume_entry(interrupt.id, ask.answers.get(interrupt.id))
                          for interrupt in result.interrupts]
            else:
                raise ProviderError(
                    f"remote agent {label}: interrupted more than {MAX_INTERRUPTS} times in one round"
                )
        if total.reported:
            yield Usage(input_tokens=total.input_tokens, output_tokens=total.output_tokens)
        else:
            yield Usage(input_tokens=input_tokens(request), output_tokens=word_count("".join(streamed)),
                        estimated=True)


@dataclass
class _Call:
    """One endpoint, called once per run (the first, and once more after each interrupt)."""

    url: str
    label: str
    headers: dict[str, str]

    def _scrub(self, text: str) -> str:
        for value in self.headers.values():
            for secret in (value, *value.split()):
                if len(secret) >= 4:
                    text = text.replace(secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."

    def error(self, what: str) -> ProviderError:
        return ProviderError(f"remote agent {self.label}: {self._scrub(what)}")

    async def run(
        self, client: httpx2.AsyncClient, run_input: RunAgentInput, conversation: Conversation,
        result: _RunResult,
    ) -> AsyncIterator[Any]:
        limit = max(1, int(settings.AGUI_AGENT_MAX_RESPONSE_BYTES))
        body = run_input.model_dump_json(by_alias=True)
        headers = {**self.headers, "Content-Type": "application/json", "Accept": "text/event-stream"}
        try:
            async with client.stream("POST", self.url, content=body, headers=headers) as response:
                if response.is_redirect:
                    raise self.error(f"answered HTTP {response.status_code}, a redirect "
                                     "(redirects are not followed)")
                if response.status_code >= 400:
                    raise self.error(f"answered HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if kind != "text/event-stream":
                    raise self.error(f"answered {kind or 'no content type'}, not an event stream")
                async for sse in httpx2.EventSource(response, max_event_size=limit):
                    if response.num_bytes_downloaded > limit:
                        raise self.error(f"response larger than {limit} bytes")
                    if not sse.data.strip():
                        continue
                    for item in self._items(self._parse(sse.data), conversation, result):
                        yield item
                    if result.finished:
                        return
        except ProviderError:
            raise
        except httpx2.TimeoutException:
            raise self.error(
                f"sent nothing for {settings.AGUI_AGENT_TIMEOUT_SECONDS:g} s (timed out)"
            ) from None
        except httpx2.ConnectError:
            raise self.error("connection refused or unreachable") from None
        except httpx2.SSEError:
            raise self.error(f"response larger than {limit} bytes") from None
        except (httpx2.RemoteProtocolError, httpx2.ReadError):
            raise self.error("closed the connection mid-stream") from None
        except httpx2.HTTPError as exc:
            raise self.error(f"request failed ({type(exc).__name__})") from None
        raise self.error("closed the stream before RUN_FINISHED")

    def _parse(self, data: str) -> Any:
        try:
            return _EVENT.validate_json(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "event"
            raise self.error(f"sent an event that does not parse ({where}: {first['msg']})") from None

    def _items(self, event: Any, conversation: Conversation, result: _RunResult) -> list[Any]:
        kind = event.type
        if kind in (EventType.TEXT_MESSAGE_CONTENT, EventType.TEXT_MESSAGE_CHUNK):
            if not event.delta:
                return []
            conversation.text(event.message_id, event.delta)
            return [Chunk(event.delta, False)]
        if kind == EventType.TEXT_MESSAGE_START:
            return [Chunk("\n\n", False)] if conversation.start(event.message_id) else []
        if kind in (EventType.REASONING_MESSAGE_CONTENT, EventType.REASONING_MESSAGE_CHUNK):
            return [Chunk(event.delta, True)] if event.delta else []
        if kind == EventType.TOOL_CALL_START:
            if not conversation.call_start(event.tool_call_id, event.tool_call_name,
                                           event.parent_message_id):
                return []
            return [RemoteToolCall(event.tool_call_id, CallStep.START, name=event.tool_call_name)]
        if kind == EventType.TOOL_CALL_ARGS:
            conversation.call_args(event.tool_call_id, event.delta)
            return [RemoteToolCall(event.tool_call_id, CallStep.ARGS, text=event.delta)]
        if kind == EventType.TOOL_CALL_END:
            conversation.call_end(event.tool_call_id)
            return [RemoteToolCall(event.tool_call_id, CallStep.END)]
        if kind == EventType.TOOL_CALL_RESULT:
            conversation.result(event.message_id, event.tool_call_id, event.content)
            return [RemoteToolCall(event.tool_call_id, CallStep.RESULT, text=content_text(event.content))]
        if kind == EventType.RUN_ERROR:
            code = f" ({event.code})" if event.code else ""
            raise self.error(f"reported an error{code}: {event.message}")
        if kind == EventType.RUN_FINISHED:
            result.finished = True
            for usage in event.usage or ():
                result.reported = True
                result.input_tokens += usage.input_tokens or 0
                result.output_tokens += usage.output_tokens or 0
            outcome = event.outcome
            if outcome is not None and outcome.type == "interrupt":
                result.interrupts = tuple(
                    InterruptAsk(id=i.id, reason=i.reason, message=i.message or "",
                                 tool_call_id=i.tool_call_id)
                    for i in outcome.interrupts
                )
        return []
