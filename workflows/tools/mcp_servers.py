"""The MCP servers an agent node uses, through the official ``mcp`` SDK's ``Client``.

A node opens the servers its agent names when it starts and closes them when it ends or the
run stops (the SDK's stdio transport then closes the server's stdin, waits briefly and kills
its process group, so no server outlives its node). A stdio server runs with the project
directory as its working directory, and the command ``python`` means the Python running the
app, so a server shipped with the project runs in the project's environment. What a server
writes on stderr is kept (its last lines explain a failed start), not mixed into our logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from workflows.definitions import McpServerSpec
from workflows.hosts import host_allowed

STDERR_TAIL = 300


class McpServerError(Exception):
    """A server could not be started or reached, or it went away during a call."""


@dataclass
class McpServer:
    """One open server: its tools (name -> description, input schema) and its client."""

    spec: McpServerSpec
    tools: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    client: Client | None = None
    failure: str = ""
    _stderr: Any = None

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
            return " ".join(text[-STDERR_TAIL:].split())
        return ""

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Start or connect, then list the tools; on failure ``failure`` says why (the node
        goes on: calls of this server's tools fail with that message)."""
        spec = self.spec
        if spec.url is not None and not host_allowed(spec.url, settings.MCP_ALLOWED_HOSTS):
            self.failure = (f"MCP server {spec.id!r} not reached: its host is not allowed "
                            "(add it to MCP_ALLOWED_HOSTS)")
            return
        try:
            if spec.url is not None:
                client = Client(spec.url)
            else:
                self._stderr = stack.enter_context(tempfile.TemporaryFile())
                command = sys.executable if spec.command == "python" else spec.command
                params = StdioServerParameters(
                    command=command or "", args=list(spec.args), env=dict(spec.env),
                    cwd=str(settings.BASE_DIR),
                )
                client = Client(stdio_client(params, errlog=self._stderr))
            async with asyncio.timeout(spec.startup_timeout):
                await stack.enter_async_context(client)
                listed = await client.list_tools()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # any failure to start is reported, not raised
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            reason = "did not answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
            tail = self.stderr_tail()
            self.failure = f"MCP server {spec.id!r} failed to start: {reason}" + (
                f" (stderr: {tail})" if tail else ""
            )
            return
        self.client = client
        self.tools = {
            tool.name: (tool.description or tool.name, dict(tool.input_schema or {}))
            for tool in listed.tools
        }

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        """(ok, text) of one call (the caller bounds its time). Raises McpServerError if the
        server is gone."""
        if self.client is None:
            raise McpServerError(self.failure or f"MCP server {self.spec.id!r} is not running")
        try:
            result = await self.client.call_tool(name, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = _describe(exc)
            if "timed out" in message.lower():
                raise TimeoutError(message) from None
            tail = self.stderr_tail()
            self.failure = f"MCP server {self.spec.id!r} failed during the call: {message}" + (
                f" (stderr: {tail})" if tail else ""
            )
            self.client = None
            raise McpServerError(self.failure) from None
        texts = [getattr(part, "text", None) for part in result.content or ()]
        text = "\n".join(t for t in texts if t)
        if not text and result.structured_content is not None:
            text = str(result.structured_content)
        return not result.is_error, text


def _describe(exc: BaseException) -> str:
    """One line about an error, looking inside exception groups (anyio task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())[:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
