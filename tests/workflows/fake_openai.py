"""A tiny fake OpenAI-compatible server for provider tests, with failure modes on demand.

It runs its own asyncio loop in a daemon thread on 127.0.0.1 (free port), so it works
with any test event loop, and it writes raw HTTP/1.1 so it can misbehave precisely: drop
the connection in the middle of a chunked body, or never answer at all.

Modes (``server.modes`` is consumed one per request, then ``server.default_mode``):
    normal      SSE chat.completion.chunk stream of ``answer``, final chunk with usage
    thinking    ``reasoning`` pieces as delta.reasoning_content first, then ``answer``
    no_usage    like normal but without the usage chunk
    slow        like normal with ``slow_delay`` seconds between chunks (for cancellation)
    error500    HTTP 500 with a JSON error body
    error400    HTTP 400 whose message contains the request's bearer token
    rate_limit  HTTP 429
    broken      a few chunks, then the TCP connection is dropped mid-body
    hang        reads the request and never answers
    tool_call   calls the calculator: one tool_calls delta naming it, its arguments in two
                fragments, finish_reason "tool_calls", then usage
"""


from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

CHUNK_ID = "chatcmpl-fake"
# Usage as OpenAI reports it for a cached prompt and a reasoning model: cached tokens are part
# of prompt_tokens, reasoning tokens part of completion_tokens (set ``server.usage`` to it).
DETAILED_USAGE = {
    "prompt_tokens": 17, "completion_tokens": 7, "total_tokens": 24,
    "prompt_tokens_details": {"cached_tokens": 12, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
}


class FakeOpenAI:
    def __init__(self) -> None:
        self.modes: list[str] = []
        self.default_mode = "normal"
        self.answer = ["Hello", " there", ", world", "!"]
        self.reasoning = ["Thinking", " hard", "."]
        self.usage = {"prompt_tokens": 17, "completion_tokens": 7, "total_tokens": 24}
        self.slow_delay = 0.05
        self.slow_repeat = 200
        self.broken_after = 3  # events sent before the drop: role chunk + 2 pieces
        self.requests: list[dict[str, Any]] = []
        self.client_closed = threading.Event()
        self.client_closed_at: float | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        payload = json.loads(body) if body else {}
        mode = self.modes.pop(0) if self.modes else self.default_mode
        self.requests.append(
            {"method": method, "path": path, "headers": headers, "json": payload, "mode": mode}
        )
        model = payload.get("model", "fake-model")

        if mode == "hang":
            await reader.read()  # returns when the client gives up
            self._mark_closed()
            return
        if mode in ("error500", "rate_limit", "error400"):
            status, reason, message = {
                "error500": (500, "Internal Server Error", "The server had an error"),
                "rate_limit": (429, "Too Many Requests", "Rate limit reached"),
                "error400": (
                    400,
                    "Bad Request",
                    f"Invalid request for key {headers.get('authorization', '')}",
                ),
            }[mode]
            data = json.dumps({"error": {"message": message, "type": "fake", "code": None}})
            writer.write(
                (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n{data}"
                ).encode()
            )
            await writer.drain()
            return

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        events = self._events(mode, model)
        watcher = asyncio.ensure_future(reader.read())  # b"" once the client closes
        try:
            for index, event in enumerate(events):
                if mode == "broken" and index == self.broken_after:
                    await writer.drain()
                    # FIN without the terminating chunk: the body is incomplete. (An RST
                    # could make the client discard chunks it has not read yet.)
                    writer.close()
                    return
                if watcher.done():
                    self._mark_closed()
                    return
                data = f"data: {event}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                if mode == "slow":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(watcher), self.slow_delay)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            watcher.cancel()

    def _mark_closed(self) -> None:
        if not self.client_closed.is_set():
            self.client_closed_at = time.monotonic()
            self.client_closed.set()

    def _events(self, mode: str, model: str) -> list[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps(
                {
                    "id": CHUNK_ID,
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        events = [chunk({"role": "assistant", "content": ""})]
        if mode == "thinking":
            events += [chunk({"reasoning_content": piece}) for piece in self.reasoning]
        if mode == "tool_call":
            call = {"index": 0, "id": "call_fake1", "type": "function",
                    "function": {"name": "calculator", "arguments": ""}}
            events.append(chunk({"tool_calls": [call]}))
            for piece in ('{"expression": ', '"6*7"}'):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            events.append(chunk({}, "tool_calls"))
            events.append(json.dumps({"id": CHUNK_ID, "object": "chat.completion.chunk",
                                      "created": 1700000000, "model": model, "choices": [],
                                      "usage": self.usage}))
            events.append("[DONE]")
            return events
        answer = self.answer * (self.slow_repeat if mode == "slow" else 1)
        events += [chunk({"content": piece}) for piece in answer]
        events.append(chunk({}, "stop"))
        if mode != "no_usage":
            events.append(
                json.dumps(
                    {
                        "id": CHUNK_ID,
                        "object": "chat.completion.chunk",
                        "created": 1700000000,
                        "model": model,
                        "choices": [],
                        "usage": self.usage,
                    }
                )
            )
        events.append("[DONE]")
        return events
