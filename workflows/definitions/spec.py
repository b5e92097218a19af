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
from graphlib import CycleError
from typing import Any

from pydantic import ValidationError

from realtime.vocabulary import NodeType
from workflows.definitions import graph
from workflows.definitions.errors import DefinitionError, definition_error
from workflows.definitions.models import (
    CHECK_MODELS,
    AgentNodeFile,
    ReviewNodeFile,
    WorkflowFile,
)
from workflows.vocabulary import ProviderName

DEFAULT_REVIEW_TITLE = "Human review"


@dataclass(frozen=True)
class AgentSpec:
    id: str
    name: str
    role: str
    model: str
    prompt: str
    provider: ProviderName = ProviderName.SCRIPTED


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
        return {
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "agents": {
                agent.id: {
                    "name": agent.name,
                    "role": agent.role,
                    "model": agent.model,
                    "provider": str(agent.provider),
                    "prompt": agent.prompt,
                }
                for agent in self.agents.values()
            },
            "nodes": nodes,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str, check_models: bool = True) -> WorkflowDefinition:
        """Validate ``data`` exactly like a file. ``check_models=False`` lets a stored copy
        from an old session load even after its model was removed from the price table."""
        try:
            parsed = WorkflowFile.model_validate(data, context={CHECK_MODELS: check_models})
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
    )
