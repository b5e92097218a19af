"""The objects the engine runs: a validated file, resolved and with its defaults filled in.

They are frozen dataclasses rather than the pydantic models of ``models.py`` because their
shape differs from the file's (a node holds its ``AgentSpec``, not an agent id; the title
and review defaults depend on other nodes) and because the rest of the code relies on
dataclass behaviour: equality ignores ``source`` (a session's stored copy equals the file
it came from), assigning an attribute raises ``AttributeError``, and ``NodeSpec.options``
is a plain dict the engine reads and copies. Nothing here validates: ``from_dict`` is the
only way in from data, and it goes through ``models.WorkflowFile``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal
from graphlib import CycleError
from typing import Any

from pydantic import ValidationError

from realtime.vocabulary import NodeType, ReviewDecision
from workflows.definitions import graph
from workflows.definitions.errors import DefinitionError, definition_error
from workflows.definitions.models import (
    AgentNodeFile,
    AguiFile,
    McpServerFile,
    ReviewNodeFile,
    ToolFile,
    WorkflowFile,
)
from workflows.vocabulary import ProviderName

DEFAULT_REVIEW_TITLE = "Human review"


@dataclass(frozen=True)
class ToolSpec:
    """One ``tools`` entry of an agent: a built-in tool or (some of) an MCP server's tools,
    with how each call is guarded."""

    builtin: str | None = None
    mcp: str | None = None
    only: tuple[str, ...] | None = None
    requires_approval: bool = False
    timeout: float = 30.0
    max_result_chars: int = 8000
    approval_timeout: int | None = 300
    approval_default: str = ReviewDecision.REJECT

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"builtin": self.builtin} if self.builtin else {"mcp": self.mcp}
        if self.only is not None:
            item["only"] = list(self.only)
        item.update(
            requires_approval=self.requires_approval, timeout=self.timeout,
            max_result_chars=self.max_result_chars, approval_timeout=self.approval_timeout,
            approval_default=str(self.approval_default),
        )
        return item


@dataclass(frozen=True)
class McpServerSpec:
    """A server of ``mcp_servers``: stdio (command, args, env) or streamable HTTP (url)."""

    id: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str | None = None
    startup_timeout: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        if self.url is not None:
            return {"url": self.url, "startup_timeout": self.startup_timeout}
        return {"command": self.command, "args": list(self.args), "env": dict(self.env),
                "startup_timeout": self.startup_timeout}


@dataclass(frozen=True)
class AguiSpec:
    """A remote AG-UI endpoint: header values as written (``${VAR}`` unresolved)."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    interrupt_timeout: int | None = 300
    interrupt_default: str = ReviewDecision.REJECT

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "headers": dict(self.headers),
                "interrupt_timeout": self.interrupt_timeout,
                "interrupt_default": str(self.interrupt_default)}


@dataclass(frozen=True)
class BudgetSpec:
    """The workflow's default budget (``workflows.budget``)."""

    usd: Decimal
    warn_at: Decimal = Decimal("0.8")
    timeout: int | None = None
    default_decision: ReviewDecision = ReviewDecision.REJECT

    def to_dict(self) -> dict[str, Any]:
        return {"usd": str(self.usd), "warn_at": str(self.warn_at), "timeout": self.timeout,
                "default_decision": str(self.default_decision)}


@dataclass(frozen=True)
class AgentSpec:
    id: str
    name: str
    role: str
    model: str
    prompt: str
    provider: ProviderName = ProviderName.SCRIPTED
    tools: tuple[ToolSpec, ...] = ()
    max_tool_rounds: int = 4
    agui: AguiSpec | None = None


@dataclass(frozen=True)
class NodeSpec:
    id: str
    type: NodeType
    depends_on: tuple[str, ...]
    agent: AgentSpec | None
    options: dict[str, Any]
    title: str


@dataclass(frozen=True)
class WorkflowDefinition:
    slug: str
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    agents: dict[str, AgentSpec]
    source: str = field(default="", compare=False)
    mcp_servers: dict[str, McpServerSpec] = field(default_factory=dict)
    budget: BudgetSpec | None = None

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"workflow {self.slug!r} has no node {node_id!r}")

    def roots(self) -> list[str]:
        return [node.id for node in self.nodes if not node.depends_on]

    def _graph(self) -> dict[str, tuple[str, ...]]:
        return {node.id: node.depends_on for node in self.nodes}

    def topological_order(self) -> list[str]:
        """Dependencies first; ties keep file order so runs and displays are stable."""
        try:
            return graph.topological_order(self._graph())
        except CycleError as exc:  # only for a definition built by hand: files are checked
            cycle = " -> ".join(exc.args[1])
            raise DefinitionError(f"dependency cycle: {cycle}", source=self.source or self.slug) from None

    def dependents(self, node_id: str) -> set[str]:
        """Every node downstream of ``node_id`` (transitively): what a rerun invalidates."""
        self.node(node_id)
        return graph.downstream(self._graph(), node_id)

    def ancestors(self, node_id: str) -> set[str]:
        """Every node upstream of ``node_id`` (transitively)."""
        self.node(node_id)
        return graph.upstream(self._graph(), node_id)

    def to_dict(self) -> dict[str, Any]:
        """The file format with defaults filled in; JSON-serialisable, read back by from_dict."""
        nodes: list[dict[str, Any]] = []
        for node in self.nodes:
            item: dict[str, Any] = {"id": node.id, "type": str(node.type)}
            if node.agent is not None:
                item["agent"] = node.agent.id
            item["title"] = node.title
            item["depends_on"] = list(node.depends_on)
            item["options"] = copy.deepcopy(node.options)
            nodes.append(item)
        agents: dict[str, Any] = {}
        for agent in self.agents.values():
            item = {
                "name": agent.name,
                "role": agent.role,
                "model": agent.model,
                "provider": str(agent.provider),
                "prompt": agent.prompt,
            }
            if agent.tools:  # tool keys only where used: older stored copies stay equal
                item["tools"] = [tool.to_dict() for tool in agent.tools]
                item["max_tool_rounds"] = agent.max_tool_rounds
            if agent.agui is not None:
                item["agui"] = agent.agui.to_dict()
            agents[agent.id] = item
        result = {
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "agents": agents,
            "nodes": nodes,
        }
        if self.mcp_servers:
            result["mcp_servers"] = {sid: spec.to_dict() for sid, spec in self.mcp_servers.items()}
        if self.budget is not None:
            result["budget"] = self.budget.to_dict()
        return result

    @classmethod
    def from_dict(cls, data: Any, *, source: str, check_models: bool = True) -> WorkflowDefinition:
        """Validate ``data`` exactly like a file. (``check_models`` is kept for callers: no
        model is refused for its price any more, see ``AgentFile``.)"""
        try:
            parsed = WorkflowFile.model_validate(data)
        except ValidationError as exc:
            raise definition_error(exc, data, source=source) from None
        return _build(parsed, source=source)


def _build(parsed: WorkflowFile, *, source: str) -> WorkflowDefinition:
    """The runtime objects for a validated file: agents resolved, defaults filled in."""
    agents = {
        agent_id: AgentSpec(
            id=agent_id,
            name=agent.name,
            role=agent.role,
            model=agent.model,
            prompt=agent.prompt,
            provider=agent.provider,
            tools=tuple(_tool(tool) for tool in agent.tools),
            max_tool_rounds=agent.max_tool_rounds,
            agui=_agui(agent.agui) if agent.agui is not None else None,
        )
        for agent_id, agent in parsed.agents.items()
    }
    titles = {
        node.id: node.title
        or (agents[node.agent].name if isinstance(node, AgentNodeFile) else DEFAULT_REVIEW_TITLE)
        for node in parsed.nodes
    }
    nodes: list[NodeSpec] = []
    for node in parsed.nodes:
        if isinstance(node, ReviewNodeFile):
            agent = None
            target = node.reviewed_id()  # not None: checked by WorkflowFile
            assert target is not None
            options = node.options.model_dump(mode="json")
            options["reviews"] = target
            options["reason"] = options["reason"] or f"Review the output of {titles[target]}"
        else:
            agent = agents[node.agent]
            options = node.options.as_dict()
        nodes.append(
            NodeSpec(
                id=node.id,
                type=NodeType(node.type),
                depends_on=tuple(node.depends_on),
                agent=agent,
                options=options,
                title=titles[node.id],
            )
        )
    return WorkflowDefinition(
        slug=parsed.slug,
        name=parsed.name,
        description=parsed.description,
        nodes=tuple(nodes),
        agents=agents,
        source=source,
        mcp_servers={sid: _server(sid, server) for sid, server in parsed.mcp_servers.items()},
        budget=BudgetSpec(
            usd=parsed.budget.usd, warn_at=parsed.budget.warn_at, timeout=parsed.budget.timeout,
            default_decision=ReviewDecision(parsed.budget.default_decision),
        ) if parsed.budget is not None else None,
    )


def _tool(tool: ToolFile) -> ToolSpec:
    return ToolSpec(
        builtin=tool.builtin, mcp=tool.mcp,
        only=tuple(tool.only) if tool.only is not None else None,
        requires_approval=tool.requires_approval, timeout=tool.timeout,
        max_result_chars=tool.max_result_chars, approval_timeout=tool.approval_timeout,
        approval_default=ReviewDecision(tool.approval_default),
    )


def _agui(agui: AguiFile) -> AguiSpec:
    return AguiSpec(
        url=agui.url, headers=tuple(agui.headers.items()),
        interrupt_timeout=agui.interrupt_timeout,
        interrupt_default=ReviewDecision(agui.interrupt_default),
    )


def _server(server_id: str, server: McpServerFile) -> McpServerSpec:
    return McpServerSpec(
        id=server_id, command=server.command, args=tuple(server.args),
        env=tuple(sorted(server.env.items())), url=server.url,
        startup_timeout=server.startup_timeout,
    )
