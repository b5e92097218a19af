"""What one agent node may call, and the one way a call is made: checked, timed, capped.

A ``Toolbox`` is opened when an agent node starts (it starts or connects to the agent's MCP
servers) and closed when the node ends or the run stops. ``call`` never raises for anything
the model or a tool did wrong: an unknown tool, arguments that are not JSON or do not match
the schema, a tool that raises, times out or answers more than its cap, a server that died:
each becomes a failed ``ToolOutcome`` whose error the model and the viewers read. Only
cancellation (a stop) goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import ValidationError

from realtime.vocabulary import ToolCallStatus
from workflows.definitions import AgentSpec, McpServerSpec, ToolSpec
from workflows.tools.builtin import ToolInputError
from workflows.tools.mcp_servers import McpServer, McpServerError
from workflows.tools.registry import BuiltinTool, ToolContext, get_builtin

MAX_TOOL_NAME = 200


@dataclass(frozen=True)
class ToolOutcome:
    status: ToolCallStatus
    result: str = ""
    error: str | None = None
    duration_ms: int = 0

    def for_model(self) -> str:
        """What the model reads back as the tool's answer."""
        if self.status == ToolCallStatus.SUCCEEDED:
            return self.result
        return f"error: {self.error}"


@dataclass(frozen=True)
class Tool:
    """A tool offered to the model: its guard (the agent's ``tools`` entry) and its code."""

    name: str
    description: str
    schema: dict[str, Any]
    spec: ToolSpec
    builtin: BuiltinTool | None = None
    server: McpServer | None = None

    @property
    def source(self) -> str:
        return self.spec.mcp or ""


class Toolbox:
    def __init__(
        self, *, agent: AgentSpec, servers: dict[str, McpServerSpec], context: ToolContext
    ) -> None:
        self.agent = agent
        self.server_specs = servers
        self.context = context
        self.tools: dict[str, Tool] = {}
        self.failures: list[str] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Toolbox:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # In the task that opened them (anyio's cancel scopes require it); the SDK's stdio
        # shutdown shields itself, so a stop does not cut it and leave a process behind.
        await self._stack.aclose()

    async def _open(self) -> None:
        servers: dict[str, McpServer] = {}
        for spec in self.agent.tools:
            if spec.builtin is not None:
                builtin = get_builtin(spec.builtin)
                assert builtin is not None  # checked when the definition was loaded
                self.tools[builtin.name] = Tool(
                    name=builtin.name, description=builtin.description, schema=builtin.schema,
                    spec=spec, builtin=builtin,
                )
                continue
            assert spec.mcp is not None
            server = servers.get(spec.mcp)
            if server is None:
                server = servers[spec.mcp] = McpServer(self.server_specs[spec.mcp])
                await server.open(self._stack)
                if server.failure:
                    self.failures.append(server.failure)
            names = spec.only if spec.only is not None else tuple(server.tools)
            for name in names:
                # A tool the server does not list (or a server that did not start) is still
                # offered when named by ``only``: its calls fail with the reason.
                description, schema = server.tools.get(name, (name, {"type": "object"}))
                self.tools[name] = Tool(
                    name=name, description=description, schema=schema, spec=spec, server=server,
                )

    def offered(self) -> tuple[dict[str, Any], ...]:
        """The tools as the model is told of them."""
        return tuple(
            {"name": tool.name, "description": tool.description, "parameters": tool.schema}
            for tool in self.tools.values()
        )

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    async def call(self, name: str, arguments: str) -> ToolOutcome:
        started = time.monotonic()
        status, result, error = await self._call(name, arguments)
        elapsed = int((time.monotonic() - started) * 1000)
        return ToolOutcome(status=status, result=result, error=error, duration_ms=elapsed)

    async def _call(self, name: str, arguments: str) -> tuple[ToolCallStatus, str, str | None]:
        failed = ToolCallStatus.FAILED
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return failed, "", f"unknown tool {name[:MAX_TOOL_NAME]!r} (available: {known})"
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return failed, "", f"arguments are not valid JSON ({exc})"
        if not isinstance(parsed, dict):
            return failed, "", "arguments must be a JSON object"
        try:
            async with asyncio.timeout(tool.spec.timeout):
                ok, text = await self._run(tool, parsed)
        except TimeoutError:
            return failed, "", f"timed out after {tool.spec.timeout:g} s"
        except _BadArguments as exc:
            return failed, "", f"arguments do not match the schema: {exc}"
        except ToolInputError as exc:
            return failed, "", str(exc)
        except McpServerError as exc:
            return failed, "", str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool's own bug is the call's error, never the node's
            return failed, "", f"the tool raised {exc.__class__.__name__}: {exc}"[:500]
        if not ok:
            return failed, "", text[:2000] or "the tool reported an error"
        cap = tool.spec.max_result_chars
        if len(text) > cap:
            return failed, "", f"the result has {len(text)} characters, more than the cap of {cap}"
        return ToolCallStatus.SUCCEEDED, text, None

    async def _run(self, tool: Tool, arguments: dict[str, Any]) -> tuple[bool, str]:
        if tool.builtin is not None:
            try:
                checked = tool.builtin.arguments.model_validate(arguments)
            except ValidationError as exc:
                raise _BadArguments(_first_error(exc)) from None
            value = await tool.builtin.call(self.context, checked)
            return True, value if isinstance(value, str) else json.dumps(value, default=str)
        assert tool.server is not None
        if tool.server.tools.get(tool.name):
            try:
                jsonschema.validate(arguments, tool.server.tools[tool.name][1])
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path)
                raise _BadArguments(f"{where + ': ' if where else ''}{exc.message}") from None
        return await tool.server.call(tool.name, arguments)


class _BadArguments(Exception):
    pass


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where + ': ' if where else ''}{error['msg']}"
