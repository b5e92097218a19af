"""The messages of a remote AG-UI run, as ``ag-ui-protocol`` models: the meeting sent at
the start, the conversation the remote agent streamed (sent back on resume, as AG-UI clients
hold history), a person's answer to an interrupt, and a tool result's content as text."""

from __future__ import annotations

import json
import uuid
from typing import Any

from ag_ui.core import (
    AssistantMessage,
    FunctionCall,
    ResumeEntry,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)

from workflows.providers.base import CompletionRequest


def meeting_messages(request: CompletionRequest) -> list[Any]:
    """The meeting so far (system prompt and messages) as AG-UI messages."""
    messages: list[Any] = []
    if request.system:
        messages.append(SystemMessage(id="meeting-system", content=request.system))
    for index, message in enumerate(request.messages):
        mid = f"meeting-{index}"
        content = message.get("content") or ""
        if message["role"] == "assistant":
            messages.append(AssistantMessage(id=mid, content=content))
        else:
            messages.append(UserMessage(id=mid, content=content))
    return messages


def resume_entry(interrupt_id: str, answer: tuple[bool, str] | None) -> ResumeEntry:
    """A person's answer in the approval shape AG-UI documents (``approved``, ``reason``)."""
    if answer is None:
        return ResumeEntry(interrupt_id=interrupt_id, status="cancelled")
    approved, comment = answer
    payload: dict[str, Any] = {"approved": approved}
    if comment:
        payload["reason"] = comment
    return ResumeEntry(interrupt_id=interrupt_id, status="resolved", payload=payload)


def content_text(content: Any) -> str:
    """A tool result's content: text as is, content parts as their text (or JSON)."""
    if isinstance(content, str):
        return content
    texts = [getattr(part, "text", None) for part in content]
    if all(isinstance(text, str) for text in texts):
        return "".join(texts)  # type: ignore[arg-type]
    return json.dumps([part.model_dump(mode="json", by_alias=True) for part in content])


class Conversation:
    """What the remote agent streamed, as the messages an AG-UI client sends back on resume
    (client-held history): assistant messages with their tool calls, then tool results."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._assistants: dict[str, AssistantMessage] = {}
        self._calls: dict[str, ToolCall] = {}
        self._ended: set[str] = set()  # a call streamed again (after a resume) adds nothing
        self._last: AssistantMessage | None = None
        self.has_text = False

    def start(self, message_id: str) -> bool:
        """A new text message; True if it follows earlier text (a new paragraph)."""
        follows = self.has_text and (self._last is None or self._last.id != message_id)
        self._assistant(message_id)
        return follows

    def _assistant(self, message_id: str | None) -> AssistantMessage:
        if message_id is None:
            if self._last is not None:
                return self._last
            message_id = f"remote-{uuid.uuid4().hex[:12]}"
        message = self._assistants.get(message_id)
        if message is None:
            message = self._assistants[message_id] = AssistantMessage(id=message_id)
            self.messages.append(message)
        self._last = message
        return message

    def text(self, message_id: str | None, delta: str) -> None:
        message = self._assistant(message_id)
        message.content = (message.content or "") + delta
        self.has_text = True

    def call_start(self, call_id: str, name: str, parent: str | None) -> bool:
        if call_id in self._calls:
            return False
        message = self._assistant(parent)
        call = self._calls[call_id] = ToolCall(id=call_id, function=FunctionCall(name=name, arguments=""))
        message.tool_calls = [*(message.tool_calls or []), call]
        return True

    def call_args(self, call_id: str, delta: str) -> None:
        if call_id in self._calls and call_id not in self._ended:
            self._calls[call_id].function.arguments += delta

    def call_end(self, call_id: str) -> None:
        self._ended.add(call_id)

    def result(self, message_id: str, call_id: str, content: Any) -> None:
        self.messages.append(ToolMessage(id=message_id, tool_call_id=call_id, content=content))
