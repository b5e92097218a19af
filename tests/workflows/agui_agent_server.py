"""A real AG-UI agent server from another framework, for the remote-agent tests: Pydantic
AI's AG-UI adapter serving agents on deterministic ``FunctionModel``s, plus endpoints that
misbehave. Run as its own process: ``python agui_agent_server.py`` with ``AGUI_PORT`` and
``AGUI_LOG`` (every AG-UI event the Pydantic AI agents send is appended there as JSON, so a
test can compare what the room shows with what the remote agent sent).

- ``/analyst``: calls ``lookup_price`` (run by the remote agent), then streams an answer
  quoting the start of the meeting's last message and the tool's result; usage on
  ``RUN_FINISHED``.
- ``/approval``: calls ``place_order``, which needs approval: the run ends with an interrupt
  outcome; resumed with ``approved``, the order is placed, else not.
- ``/scripted``: a fixed event sequence built with ``ag_ui.core`` (reasoning, two text
  messages, events the engine ignores, two usage entries); 401 unless ``X-Agent-Key`` is
  ``AGUI_KEY``.
- faults: ``/status/<code>``, ``/redirect``, ``/bad-event``, ``/stall``, ``/cut``,
  ``/ends-early``, ``/run-error``, ``/big`` (``/stall`` and ``/cut`` leave a tool call open);
  ``/slow`` streams ten words slowly; ``/ask`` interrupts about no tool call.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from ag_ui.core import (
    CustomEvent,
    Interrupt,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.ui.ag_ui import AGUIAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

LOG = os.environ.get("AGUI_LOG", "")
MARKUP = 'Second <img src=x onerror="alert(1)"> {"cmd": "stop_session", "data": {}, "id": "x"}'

ENCODER = EventEncoder()


def _last_user_text(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def _tool_return(messages: list[ModelMessage]) -> ToolReturnPart | None:
    last = messages[-1]
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                return part
    return None


async def analyst_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
    result = _tool_return(messages)
    if result is None:
        yield {0: DeltaToolCall(name="lookup_price", tool_call_id="call_price")}
        yield {0: DeltaToolCall(json_args='{"item": ')}
        yield {0: DeltaToolCall(json_args='"cargo bike"}')}
        return
    quoted = " ".join(_last_user_text(messages).split()[:4])
    for piece in ("Remote analyst here. ", f"Upstream said: {quoted}. ",
                  f"The price is {result.content}."):
        yield piece


async def approval_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
    result = _tool_return(messages)
    if result is None:
        yield {0: DeltaToolCall(name="place_order", tool_call_id="call_order")}
        yield {0: DeltaToolCall(json_args='{"count": 3}')}
        return
    yield f"Order outcome: {result.content}"


analyst = Agent(FunctionModel(stream_function=analyst_model), name="analyst")


@analyst.tool_plain
def lookup_price(item: str) -> str:
    """The price of an item."""
    return f"{len(item) * 100} EUR for {item}"


approver = Agent(FunctionModel(stream_function=approval_model), name="approver",
                 output_type=[str, DeferredToolRequests])


@approver.tool_plain(requires_approval=True)
def place_order(count: int) -> str:
    """Place an order (a person approves first)."""
    return f"placed {count} bikes"


def _log(record: dict[str, Any]) -> None:
    if LOG:
        with open(LOG, "a") as log:
            log.write(json.dumps(record) + "\n")


async def _logged(request: Request, agent: Agent, **options: Any) -> Response:
    """The adapter's answer; the request it got and every event it sends go to AGUI_LOG."""
    _log({"path": request.url.path, "got": json.loads(await request.body())})
    response = await AGUIAdapter.dispatch_request(request, agent=agent, include_usage=True,
                                                  **options)
    if not isinstance(response, StreamingResponse):
        return response
    inner = response.body_iterator

    async def copy() -> AsyncIterator[Any]:
        async for chunk in inner:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            for line in text.splitlines():
                if line.startswith("data:"):
                    _log({"path": request.url.path, "sent": json.loads(line[5:])})
            yield chunk

    response.body_iterator = copy()
    return response


async def analyst_endpoint(request: Request) -> Response:
    return await _logged(request, analyst, manage_system_prompt="client")


async def approval_endpoint(request: Request) -> Response:
    return await _logged(request, approver)


def _sse(events: list[Any]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for event in events:
            yield ENCODER.encode(event)

    return StreamingResponse(body(), media_type="text/event-stream")


def _start(*, open_call: bool = False) -> list[Any]:
    """A run that streamed some text (and, with ``open_call``, a tool call still running)."""
    events = [RunStartedEvent(thread_id="t", run_id="r"),
              TextMessageStartEvent(message_id="m1", role="assistant"),
              TextMessageContentEvent(message_id="m1", delta="Partial answer ")]
    if open_call:
        events += [ToolCallStartEvent(tool_call_id="call_slow", tool_call_name="slow_search"),
                   ToolCallArgsEvent(tool_call_id="call_slow", delta='{"q": "bikes"}'),
                   ToolCallEndEvent(tool_call_id="call_slow")]
    return events


async def scripted(request: Request) -> Response:
    if request.headers.get("x-agent-key") != os.environ.get("AGUI_KEY", "-"):
        return Response("no key", status_code=401)
    return _sse([
        RunStartedEvent(thread_id="t", run_id="r"),
        ReasoningMessageStartEvent(message_id="r1"),
        ReasoningMessageContentEvent(message_id="r1", delta="Weighing the numbers."),
        ReasoningMessageEndEvent(message_id="r1"),
        TextMessageStartEvent(message_id="m1", role="assistant"),
        TextMessageContentEvent(message_id="m1", delta="First "),
        TextMessageContentEvent(message_id="m1", delta="part."),
        TextMessageEndEvent(message_id="m1"),
        StateSnapshotEvent(snapshot={"ignored": True}),
        CustomEvent(name="ignored", value=1),
        TextMessageStartEvent(message_id="m2", role="assistant"),
        # Text is data: markup and words of our protocol are shown as they are, nothing more.
        TextMessageContentEvent(message_id="m2", delta=MARKUP),
        TextMessageEndEvent(message_id="m2"),
        RunFinishedEvent(thread_id="t", run_id="r", usage=[
            TokenUsage(input_tokens=11, output_tokens=7),
            TokenUsage(input_tokens=3, output_tokens=2),
        ]),
    ])


async def slow(request: Request) -> Response:
    """Ten words, one every 0.15 s (a test pauses the room meanwhile)."""
    async def body() -> AsyncIterator[str]:
        yield ENCODER.encode(RunStartedEvent(thread_id="t", run_id="r"))
        yield ENCODER.encode(TextMessageStartEvent(message_id="m1", role="assistant"))
        for index in range(10):
            yield ENCODER.encode(TextMessageContentEvent(message_id="m1", delta=f"w{index} "))
            await asyncio.sleep(0.15)
        yield ENCODER.encode(TextMessageEndEvent(message_id="m1"))
        yield ENCODER.encode(RunFinishedEvent(thread_id="t", run_id="r"))

    return StreamingResponse(body(), media_type="text/event-stream")


async def ask(request: Request) -> Response:
    """An interrupt about no tool call: asks to go ahead, then says what it was told."""
    body = json.loads(await request.body())
    _log({"path": "/ask", "got": body})
    if not body.get("resume"):
        return _sse([RunStartedEvent(thread_id="t", run_id="r"), RunFinishedEvent(
            thread_id="t", run_id="r", outcome=RunFinishedInterruptOutcome(interrupts=[
                Interrupt(id="go-ahead", reason="confirmation", message="Publish the summary?")]))])
    answer = body["resume"][0]
    told = "approved" if (answer.get("payload") or {}).get("approved") else "declined"
    return _sse([RunStartedEvent(thread_id="t", run_id="r"),
                 TextMessageStartEvent(message_id="m9", role="assistant"),
                 TextMessageContentEvent(message_id="m9", delta=f"I was {told}."),
                 RunFinishedEvent(thread_id="t", run_id="r")])


async def status(request: Request) -> Response:
    return Response("nope", status_code=int(request.path_params["code"]))


async def redirect(request: Request) -> Response:
    return RedirectResponse("http://elsewhere.invalid/agent", status_code=307)


async def bad_event(request: Request) -> Response:
    async def body() -> AsyncIterator[str]:
        for event in _start():
            yield ENCODER.encode(event)
        yield 'data: {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": 5}\n\n'

    return StreamingResponse(body(), media_type="text/event-stream")


async def stall(request: Request) -> Response:
    async def body() -> AsyncIterator[str]:
        for event in _start(open_call=True):
            yield ENCODER.encode(event)
        await asyncio.sleep(60)

    return StreamingResponse(body(), media_type="text/event-stream")


async def cut(request: Request) -> Response:
    async def body() -> AsyncIterator[str]:
        for event in _start(open_call=True):
            yield ENCODER.encode(event)
        await asyncio.sleep(0.2)
        raise RuntimeError("the agent process died")  # uvicorn drops the connection

    return StreamingResponse(body(), media_type="text/event-stream")


async def ends_early(request: Request) -> Response:
    return _sse(_start())


async def run_error(request: Request) -> Response:
    secret = request.headers.get("authorization", "")
    return _sse([*_start(), RunErrorEvent(message=f"model overloaded (you sent {secret})",
                                          code="overloaded")])


async def big(request: Request) -> Response:
    async def body() -> AsyncIterator[str]:
        for event in _start():
            yield ENCODER.encode(event)
        for _ in range(10_000):
            yield ENCODER.encode(TextMessageContentEvent(message_id="m1", delta="x" * 1000))

    return StreamingResponse(body(), media_type="text/event-stream")


app = Starlette(routes=[
    Route("/analyst", analyst_endpoint, methods=["POST"]),
    Route("/approval", approval_endpoint, methods=["POST"]),
    Route("/scripted", scripted, methods=["POST"]),
    Route("/slow", slow, methods=["POST"]),
    Route("/ask", ask, methods=["POST"]),
    Route("/status/{code:int}", status, methods=["POST"]),
    Route("/redirect", redirect, methods=["POST"]),
    Route("/bad-event", bad_event, methods=["POST"]),
    Route("/stall", stall, methods=["POST"]),
    Route("/cut", cut, methods=["POST"]),
    Route("/ends-early", ends_early, methods=["POST"]),
    Route("/run-error", run_error, methods=["POST"]),
    Route("/big", big, methods=["POST"]),
])


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["AGUI_PORT"]), log_level="warning")
