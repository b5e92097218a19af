"""Declarative workflow files: the format, loading, and strict validation.

Workflows are data, not code, so that a new meeting format is a reviewed YAML file rather
than an engine change. Validation is strict (unknown keys are errors, every reference is
checked) because a typo in a file would otherwise surface as a half-run session in front of
users; the app calls ``validate_all()`` at start-up so a bad shipped file stops the deploy.

File format (``<WORKFLOW_DIR>/<slug>.yaml``; the file name must equal the slug)::

    slug: demo                       # required, ^[a-z0-9][a-z0-9-]{0,49}$
    name: Demo meeting               # required, shown in lists (sorted by name)
    description: What this is for.   # optional, default ""
    agents:                          # required mapping: agent id -> agent
      moderator:                     # agent id: ^[a-z][a-z0-9_]{0,39}$
        name: Moderator              # required, display name
        role: Keeps the meeting on track   # required, one line
        model: scripted-small        # required, must be priced in workflows.pricing
        provider: scripted           # optional: scripted (default) | openai
        prompt: You are ...          # required, the system prompt
    nodes:                           # required, at least one node
      - id: brief                    # required, unique, ^[a-z][a-z0-9_]{0,39}$
        type: agent                  # required: agent | human_review
        agent: moderator             # required for agent nodes, forbidden for reviews
        title: Brief                 # optional; default: agent name / "Human review"
        depends_on: []               # optional list of node ids, default []
        options: {}                  # optional, see below
      - id: review
        type: human_review
        depends_on: [brief]
        options: {reviews: brief, reason: Check the brief, timeout: 300,
                  default_decision: approve, max_rounds: 2}

Agent node ``options`` (all optional; only the keys given are kept):
    ``max_tokens`` int >= 1: answer length cap (the scripted provider answers exactly this
    many tokens); ``temperature`` number 0..2 (stored as float); ``thinking`` bool: stream
    reasoning first (scripted default true; ignored by the openai provider, which streams
    reasoning whenever the server sends it); ``fail`` bool and ``fail_after_tokens`` int >= 0:
    make the scripted provider fail this node, for tests and demos.

``human_review`` node ``options`` (defaults are filled in, so all five keys are present
after loading):
    ``reviews``: id of the agent node whose output is reviewed and which answers again on
    reject; default: the review's single dependency; it must be an agent node and an
    ancestor of the review. ``reason`` str, shown to the reviewer (default "Review the
    output of <title>"). ``timeout``: int seconds >= 1, or null to wait forever (default
    null). ``default_decision``: approve | reject (default approve), applied when the
    timeout expires; a timed-out reject counts as a rejection. ``max_rounds``: int >= 1
    (default 1), the number of reject-and-retry rounds: each of the first ``max_rounds``
    rejections sends the reviewed agent back to answer again and the review is asked
    again; once ``max_rounds`` rejections have been spent, the next review round is approved
    automatically with a note saying so, so a session can never loop forever.

Any key not listed above, at any level, is an error. ``DefinitionError`` messages name the
file and the node, e.g. ``workflows/definitions/bad.yaml: node 'x': depends on unknown node
'y'``. ``WorkflowDefinition.to_dict()`` returns this same shape (with defaults filled in) so
sessions can store the definition they ran and read it back with ``from_dict``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from workflows.pricing import known_model

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NODE_TYPES = ("agent", "human_review")
PROVIDERS = ("scripted", "openai")
DECISIONS = ("approve", "reject")

_TOP_KEYS = {"slug", "name", "description", "agents", "nodes"}
_AGENT_KEYS = {"name", "role", "model", "prompt", "provider"}
_NODE_KEYS = {"id", "type", "agent", "title", "depends_on", "options"}
_AGENT_OPTION_KEYS = {"max_tokens", "fail", "fail_after_tokens", "temperature", "thinking"}
_REVIEW_OPTION_KEYS = {"reviews", "reason", "timeout", "default_decision", "max_rounds"}


class DefinitionError(ValueError):
    """A workflow file is invalid; the message names the file and, if any, the node."""

    def __init__(self, message: str, *, source: str, node_id: str | None = None) -> None:
        self.source = source
        self.node_id = node_id
        self.detail = message
        where = f"{source}: node {node_id!r}: " if node_id else f"{source}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class AgentSpec:
    id: str
    name: str
    role: str
    model: str
    prompt: str
    provider: str = "scripted"


@dataclass(frozen=True)
class NodeSpec:
    id: str
    type: str
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

    def topological_order(self) -> list[str]:
        """Dependencies first; ties keep file order so runs and displays are stable."""
        remaining = {node.id: set(node.depends_on) for node in self.nodes}
        order: list[str] = []
        while remaining:
            ready = [node.id for node in self.nodes if remaining.get(node.id) == set()]
            if not ready:
                raise DefinitionError("dependency cycle", source=self.source or self.slug)
            for node_id in ready:
                del remaining[node_id]
                order.append(node_id)
            for deps in remaining.values():
                deps.difference_update(ready)
        return order

    def dependents(self, node_id: str) -> set[str]:
        """Every node downstream of ``node_id`` (transitively): what a rerun invalidates."""
        self.node(node_id)
        children: dict[str, list[str]] = {node.id: [] for node in self.nodes}
        for node in self.nodes:
            for dep in node.depends_on:
                children[dep].append(node.id)
        found: set[str] = set()
        stack = list(children[node_id])
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(children[current])
        return found

    def ancestors(self, node_id: str) -> set[str]:
        """Every node upstream of ``node_id`` (transitively)."""
        found: set[str] = set()
        stack = list(self.node(node_id).depends_on)
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(self.node(current).depends_on)
        return found

    def to_dict(self) -> dict[str, Any]:
        """The file format with defaults filled in; JSON-serialisable, read back by from_dict."""
        nodes: list[dict[str, Any]] = []
        for node in self.nodes:
            item: dict[str, Any] = {"id": node.id, "type": node.type}
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
                    "provider": agent.provider,
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
        return _Parser(source, check_models=check_models).parse(data)


# --------------------------------------------------------------------------- parsing


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Parser:
    def __init__(self, source: str, *, check_models: bool = True) -> None:
        self.source = source
        self.check_models = check_models

    def error(self, message: str, node_id: str | None = None) -> DefinitionError:
        return DefinitionError(message, source=self.source, node_id=node_id)

    def mapping(self, value: Any, what: str, node_id: str | None = None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"{what} must be a mapping, got {_type_name(value)}", node_id)
        return value

    def check_keys(
        self,
        data: Mapping[str, Any],
        *,
        allowed: set[str],
        required: Iterable[str],
        what: str,
        node_id: str | None = None,
    ) -> None:
        unknown = sorted(str(key) for key in data if key not in allowed)
        if unknown:
            raise self.error(
                f"unknown key {unknown[0]!r} in {what} (allowed: {', '.join(sorted(allowed))})",
                node_id,
            )
        for key in required:
            if key not in data:
                raise self.error(f"{what} is missing required key {key!r}", node_id)

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        what: str,
        node_id: str | None = None,
        *,
        default: str | None = None,
        allow_empty: bool = False,
    ) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.error(f"{what} {key!r} must be a string, got {_type_name(value)}", node_id)
        if not allow_empty and not value.strip():
            raise self.error(f"{what} {key!r} must not be empty", node_id)
        return value

    def parse(self, data: Any) -> WorkflowDefinition:
        data = self.mapping(data, "the workflow")
        self.check_keys(
            data,
            allowed=_TOP_KEYS,
            required=("slug", "name", "agents", "nodes"),
            what="the workflow",
        )
        slug = self.string(data, "slug", "workflow")
        if not SLUG_RE.match(slug):
            raise self.error(f"slug {slug!r} must match {SLUG_RE.pattern}")
        name = self.string(data, "name", "workflow")
        description = self.string(data, "description", "workflow", default="", allow_empty=True)
        agents = self.parse_agents(data["agents"])
        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, list):
            raise self.error(f"'nodes' must be a list, got {_type_name(raw_nodes)}")
        if not raw_nodes:
            raise self.error("a workflow needs at least one node")
        nodes = self.parse_nodes(raw_nodes, agents)
        definition = WorkflowDefinition(
            slug=slug,
            name=name,
            description=description,
            nodes=tuple(nodes),
            agents=agents,
            source=self.source,
        )
        self.check_cycles(definition)
        self.check_reviews(definition)
        return definition

    def parse_agents(self, raw: Any) -> dict[str, AgentSpec]:
        raw = self.mapping(raw, "'agents'")
        agents: dict[str, AgentSpec] = {}
        for agent_id, spec in raw.items():
            what = f"agent {agent_id!r}"
            if not isinstance(agent_id, str) or not ID_RE.match(agent_id):
                raise self.error(f"agent id {agent_id!r} must match {ID_RE.pattern}")
            spec = self.mapping(spec, what)
            self.check_keys(
                spec,
                allowed=_AGENT_KEYS,
                required=("name", "role", "model", "prompt"),
                what=what,
            )
            model = self.string(spec, "model", what)
            if self.check_models and not known_model(model):
                raise self.error(
                    f"{what} uses unknown model {model!r} (not in workflows.pricing; "
                    "add it to EXTRA_MODEL_PRICES)"
                )
            provider = self.string(spec, "provider", what, default="scripted")
            if provider not in PROVIDERS:
                raise self.error(f"{what} uses unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
            agents[agent_id] = AgentSpec(
                id=agent_id,
                name=self.string(spec, "name", what),
                role=self.string(spec, "role", what),
                model=model,
                prompt=self.string(spec, "prompt", what),
                provider=provider,
            )
        if not agents:
            raise self.error("'agents' must define at least one agent")
        return agents

    def parse_nodes(self, raw_nodes: list[Any], agents: dict[str, AgentSpec]) -> list[NodeSpec]:
        ids: list[str] = []
        raw_by_id: list[tuple[str, Mapping[str, Any]]] = []
        for index, raw in enumerate(raw_nodes):
            raw = self.mapping(raw, f"node #{index + 1}")
            node_id = raw.get("id")
            if not isinstance(node_id, str) or not ID_RE.match(node_id):
                raise self.error(f"node #{index + 1} needs an 'id' matching {ID_RE.pattern}, got {node_id!r}")
            if node_id in ids:
                raise self.error("duplicate node id", node_id)
            ids.append(node_id)
            raw_by_id.append((node_id, raw))
        return [self.parse_node(node_id, raw, ids, agents) for node_id, raw in raw_by_id]

    def parse_node(
        self, node_id: str, raw: Mapping[str, Any], ids: list[str], agents: dict[str, AgentSpec]
    ) -> NodeSpec:
        self.check_keys(raw, allowed=_NODE_KEYS, required=("id", "type"), what="the node", node_id=node_id)
        node_type = raw["type"]
        if node_type not in NODE_TYPES:
            raise self.error(f"unknown type {node_type!r} (known: {', '.join(NODE_TYPES)})", node_id)
        depends_on = raw.get("depends_on", [])
        if depends_on is None:
            depends_on = []
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            raise self.error("'depends_on' must be a list of node ids", node_id)
        for dep in depends_on:
            if dep not in ids:
                raise self.error(f"depends on unknown node {dep!r}", node_id)
        if len(set(depends_on)) != len(depends_on):
            raise self.error("'depends_on' lists a node twice", node_id)
        options = raw.get("options", {})
        if options is None:
            options = {}
        options = dict(self.mapping(options, "'options'", node_id))

        agent: AgentSpec | None = None
        if node_type == "agent":
            agent_id = raw.get("agent")
            if not isinstance(agent_id, str):
                raise self.error("agent nodes need 'agent': the id of a defined agent", node_id)
            if agent_id not in agents:
                raise self.error(f"uses unknown agent {agent_id!r}", node_id)
            agent = agents[agent_id]
            options = self.agent_options(node_id, options)
            default_title = agent.name
        else:
            if "agent" in raw:
                raise self.error("human_review nodes take no 'agent'", node_id)
            options = self.review_options(node_id, options, depends_on)
            default_title = "Human review"
        title = self.string(raw, "title", "node", node_id, default=default_title)
        return NodeSpec(
            id=node_id,
            type=node_type,
            depends_on=tuple(depends_on),
            agent=agent,
            options=options,
            title=title,
        )

    def agent_options(self, node_id: str, options: dict[str, Any]) -> dict[str, Any]:
        self.check_keys(
            options, allowed=_AGENT_OPTION_KEYS, required=(), what="agent options", node_id=node_id
        )
        result: dict[str, Any] = {}
        for key, value in options.items():
            if key in ("fail", "thinking"):
                if not isinstance(value, bool):
                    raise self.error(f"option {key!r} must be true or false, got {value!r}", node_id)
            elif key == "max_tokens":
                if not _is_int(value) or value < 1:
                    raise self.error(f"option 'max_tokens' must be an integer >= 1, got {value!r}", node_id)
            elif key == "fail_after_tokens":
                if not _is_int(value) or value < 0:
                    raise self.error(
                        f"option 'fail_after_tokens' must be an integer >= 0, got {value!r}",
                        node_id,
                    )
            elif key == "temperature":
                if not isinstance(value, int | float) or isinstance(value, bool) or not (0 <= value <= 2):
                    raise self.error(
                        f"option 'temperature' must be a number from 0 to 2, got {value!r}",
                        node_id,
                    )
                value = float(value)
            result[key] = value
        return result

    def review_options(self, node_id: str, options: dict[str, Any], depends_on: list[str]) -> dict[str, Any]:
        self.check_keys(
            options,
            allowed=_REVIEW_OPTION_KEYS,
            required=(),
            what="human_review options",
            node_id=node_id,
        )
        reviews = options.get("reviews")
        if reviews is None:
            if len(depends_on) != 1:
                raise self.error(
                    "set options.reviews: a review without exactly one dependency cannot "
                    "guess which agent node it reviews",
                    node_id,
                )
            reviews = depends_on[0]
        if not isinstance(reviews, str):
            raise self.error(f"option 'reviews' must be a node id, got {reviews!r}", node_id)
        timeout = options.get("timeout")
        if timeout is not None and (not _is_int(timeout) or timeout < 1):
            raise self.error(f"option 'timeout' must be an integer >= 1 or null, got {timeout!r}", node_id)
        decision = options.get("default_decision", "approve")
        if decision not in DECISIONS:
            raise self.error(
                f"option 'default_decision' must be approve or reject, got {decision!r}", node_id
            )
        max_rounds = options.get("max_rounds", 1)
        if not _is_int(max_rounds) or max_rounds < 1:
            raise self.error(f"option 'max_rounds' must be an integer >= 1, got {max_rounds!r}", node_id)
        reason = options.get("reason", "")
        if not isinstance(reason, str):
            raise self.error(f"option 'reason' must be a string, got {_type_name(reason)}", node_id)
        return {
            "reviews": reviews,
            "reason": reason,
            "timeout": timeout,
            "default_decision": decision,
            "max_rounds": max_rounds,
        }

    def check_cycles(self, definition: WorkflowDefinition) -> None:
        deps = {node.id: node.depends_on for node in definition.nodes}
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done

        def visit(node_id: str, path: list[str]) -> None:
            state[node_id] = 1
            path.append(node_id)
            for dep in deps[node_id]:
                if state.get(dep) == 1:
                    cycle = [*path[path.index(dep) :], dep]
                    raise self.error("dependency cycle: " + " -> ".join(reversed(cycle)), dep)
                if dep not in state:
                    visit(dep, path)
            path.pop()
            state[node_id] = 2

        for node in definition.nodes:
            if node.id not in state:
                visit(node.id, [])

    def check_reviews(self, definition: WorkflowDefinition) -> None:
        for node in definition.nodes:
            if node.type != "human_review":
                continue
            target = node.options["reviews"]
            if target not in {n.id for n in definition.nodes}:
                raise self.error(f"reviews unknown node {target!r}", node.id)
            if definition.node(target).type != "agent":
                raise self.error(f"reviews {target!r}, which is not an agent node", node.id)
            if target not in definition.ancestors(node.id):
                raise self.error(
                    f"reviews {target!r}, which is not upstream of it (add it to depends_on)",
                    node.id,
                )
            if not node.options["reason"]:
                title = definition.node(target).title
                node.options["reason"] = f"Review the output of {title}"


# --------------------------------------------------------------------------- files


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, which PyYAML would silently drop."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def load_file(path: Path | str) -> WorkflowDefinition:
    path = Path(path)
    source = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(f"cannot read file ({exc.strerror})", source=source) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise DefinitionError(f"invalid YAML: {exc}", source=source) from None
    definition = WorkflowDefinition.from_dict(data, source=source)
    if definition.slug != path.stem:
        raise DefinitionError(
            f"slug {definition.slug!r} does not match the file name {path.name!r}", source=source
        )
    return definition


def _workflow_dir() -> Path:
    return Path(settings.WORKFLOW_DIR)


def load_workflow(slug: str) -> WorkflowDefinition:
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise DefinitionError("not a valid workflow slug", source=repr(slug))
    path = _workflow_dir() / f"{slug}.yaml"
    if not path.is_file():
        raise DefinitionError(
            f"unknown workflow (no {path.name} in {_display_path(path.parent)})", source=slug
        )
    return load_file(path)


def _files() -> list[Path]:
    return sorted(_workflow_dir().glob("*.yaml"))


def list_workflows() -> list[WorkflowDefinition]:
    """Every shipped workflow, sorted by name; raises DefinitionError on the first bad file."""
    return sorted((load_file(path) for path in _files()), key=lambda d: (d.name.lower(), d.slug))


def validate_all() -> None:
    """Start-up check: refuse to serve with a broken or missing workflow directory."""
    files = _files()
    if not files:
        raise DefinitionError("no workflow files found", source=_display_path(_workflow_dir()))
    for path in files:
        load_file(path)
