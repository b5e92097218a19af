"""The workflow file format as pydantic models: what a file may contain, checked strictly.

These models describe the file exactly as written (agents keyed by id, nodes naming their
agent by id), not the objects the engine runs (``spec.py`` builds those from a validated
file). Pydantic does the field checks, which used to be hundreds of lines of hand-written
``isinstance`` tests with their own messages: types, ranges, patterns, required keys and,
with ``extra="forbid"``, unknown keys at every level, each error located by its path in the
file. ``strict=True`` keeps YAML's loose scalars from slipping through: ``true`` is not an
int, ``1`` is not a bool and ``5`` is not a string. The enum fields are the one exception
(``strict=False``): a file spells them as plain strings, which strict mode would refuse.

What one field cannot check alone lives in ``WorkflowFile``'s model validator: references
between agents and nodes, unique ids, review targets and dependency cycles (through
``graph``, i.e. ``graphlib``). Its errors are ``PydanticCustomError``s carrying the node id
and field in their context, so ``errors.definition_error`` can name them like any other.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from realtime.vocabulary import NodeType, ReviewDecision
from workflows.definitions import graph
from workflows.tools.registry import builtin_names, get_builtin
from workflows.vocabulary import ProviderName

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank_string", "String should not be blank")
    return value


def _none_as(empty: Any) -> BeforeValidator:
    """``key:`` with no value (YAML null) means the default, as it always has for lists."""
    return BeforeValidator(lambda value: empty() if value is None else value)


def _unique(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise PydanticCustomError("duplicate_item", "lists {item} twice", {"item": repr(item)})
        seen.add(item)
    return ids


Text = Annotated[str, AfterValidator(_not_blank)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_RE.pattern)]
Identifier = Annotated[str, StringConstraints(pattern=ID_RE.pattern)]
PositiveInt = Annotated[int, Field(ge=1)]


def reference_error(message: str, *, node_id: str, field: str | None = None) -> PydanticCustomError:
    """An error about a reference between nodes, located by node id (and field) for the message."""
    context = {"node_id": node_id} if field is None else {"node_id": node_id, "field": field}
    return PydanticCustomError("workflow_reference", message, context)


class FileModel(BaseModel):
    """Every level of a file: unknown keys are errors, scalars are taken as written."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _tool_shorthand(value: Any) -> Any:
    """``- calculator`` in a tools list means ``- builtin: calculator``."""
    return {"builtin": value} if isinstance(value, str) else value


class ToolFile(FileModel):
    """One entry of ``agents.<id>.tools``: a built-in tool, or the tools of an MCP server."""

    builtin: str | None = None
    mcp: Identifier | None = None
    only: Annotated[list[Text], AfterValidator(_unique)] | None = None
    requires_approval: bool = False
    timeout: Annotated[float, Field(gt=0, le=600, strict=False)] = 30.0
    max_result_chars: Annotated[int, Field(ge=100, le=1_000_000)] = 8000
    approval_timeout: PositiveInt | None = 300
    approval_default: Annotated[ReviewDecision, Field(strict=False)] = ReviewDecision.REJECT

    @field_validator("builtin")
    @classmethod
    def _known_builtin(cls, name: str | None) -> str | None:
        if name is not None and get_builtin(name) is None:
            raise PydanticCustomError(
                "unknown_tool", "unknown built-in tool {name} (known: {known})",
                {"name": repr(name), "known": ", ".join(builtin_names())},
            )
        return name

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.builtin is None) == (self.mcp is None):
            raise PydanticCustomError("tool_source", "give exactly one of builtin or mcp")
        if self.builtin is not None and self.only is not None:
            raise PydanticCustomError("tool_only", "only applies to an mcp entry")
        return self


class McpServerFile(FileModel):
    """``mcp_servers.<id>``: a server started over stdio (command) or reached over HTTP (url)."""

    command: Text | None = None
    args: Annotated[list[str], _none_as(list)] = Field(default_factory=list)
    env: Annotated[dict[str, str], _none_as(dict)] = Field(default_factory=dict)
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    startup_timeout: Annotated[float, Field(gt=0, le=120, strict=False)] = 10.0

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if (self.command is None) == (self.url is None):
            raise PydanticCustomError("mcp_transport", "give exactly one of command (stdio) or url (HTTP)")
        if self.url is not None and (self.args or self.env):
            raise PydanticCustomError("mcp_transport", "args and env apply to a command only")
        return self


HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# ``${NAME}`` in a header value is the environment variable NAME, read at call time.
ENV_REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name):
            raise PydanticCustomError("header_name", "{name} is not an HTTP header name",
                                      {"name": repr(name)})
        if "\n" in value or "\r" in value:
            raise PydanticCustomError("header_value", "the value of {name} spans lines",
                                      {"name": repr(name)})
    return headers


class AguiFile(FileModel):
    """``agents.<id>.agui``: the remote AG-UI endpoint an ``agui`` agent is (docs/engine.md,
    "Remote AG-UI agents"). Secrets stay out of the file: a header value may name environment
    variables (``Bearer ${AGUI_TOKEN}``), resolved at each call and never stored resolved."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/@]+(/\S*)?$", max_length=2000)]
    headers: Annotated[dict[str, str], _none_as(dict), AfterValidator(_headers)] = Field(
        default_factory=dict
    )
    # A remote interrupt becomes a human review: how long it waits, and what then applies.
    interrupt_timeout: PositiveInt | None = 300
    interrupt_default: Annotated[ReviewDecision, Field(strict=False)] = ReviewDecision.REJECT


class AgentFile(FileModel):
    """``agents.<id>``: who answers, with which model and prompt, and which tools it may call."""

    name: Text
    role: Text
    model: Text
    prompt: Text
    provider: Annotated[ProviderName, Field(strict=False)] = ProviderName.SCRIPTED
    tools: Annotated[
        list[Annotated[ToolFile, BeforeValidator(_tool_shorthand)]], _none_as(list)
    ] = Field(default_factory=list)
    max_tool_rounds: Annotated[int, Field(ge=1, le=50)] = 4
    agui: AguiFile | None = None

    @model_validator(mode="after")
    def _agui_with_its_provider(self) -> Self:
        if (self.provider == ProviderName.AGUI) != (self.agui is not None):
            raise PydanticCustomError(
                "agui_endpoint", "provider agui and an agui endpoint go together (give both or neither)"
            )
        if self.agui is not None and self.tools:
            raise PydanticCustomError(
                "agui_tools", "a remote AG-UI agent runs its own tools: remove tools"
            )
        return self

    # A model without a known price is not an error: it runs with its cost shown as "price
    # unknown", and the sessions_app.W001 system check lists it (prices live in the admin
    # too, which a file cannot see).


class ScriptedToolCall(FileModel):
    """A tool call the scripted model makes (tests and demos): arguments as an object, or
    as raw text sent as is (so a test can send JSON that does not parse)."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class AgentOptions(FileModel):
    """``options`` of an agent node. Only the keys given are kept (null = not given)."""

    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    thinking: bool | None = None
    fail: bool | None = None
    fail_after_tokens: Annotated[int, Field(ge=0)] | None = None
    scripted_tool_calls: list[ScriptedToolCall] | None = None
    scripted_tool_rounds: Annotated[int, Field(ge=0, le=50)] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class ReviewOptions(FileModel):
    """``options`` of a human_review node; every key has a default."""

    reviews: Identifier | None = None
    reason: str = ""
    timeout: PositiveInt | None = None
    default_decision: Annotated[ReviewDecision, Field(strict=False)] = ReviewDecision.APPROVE
    max_rounds: PositiveInt = 1


class BudgetFile(FileModel):
    """``budget``: the default budget of the workflow's sessions (each may set its own)."""

    usd: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=6, allow_inf_nan=False,
                                  strict=False)]
    warn_at: Annotated[Decimal, Field(gt=0, lt=1, allow_inf_nan=False, strict=False)] = Decimal("0.8")
    timeout: PositiveInt | None = None
    default_decision: Annotated[ReviewDecision, Field(strict=False)] = ReviewDecision.REJECT


class NodeFile(FileModel):
    """What agent and human_review nodes share."""

    id: Identifier
    title: Text | None = None
    depends_on: Annotated[list[Identifier], _none_as(list), AfterValidator(_unique)] = Field(
        default_factory=list
    )


class AgentNodeFile(NodeFile):
    type: Literal[NodeType.AGENT]
    agent: Identifier
    options: Annotated[AgentOptions, _none_as(dict)] = Field(default_factory=AgentOptions)


class ReviewNodeFile(NodeFile):
    type: Literal[NodeType.HUMAN_REVIEW]
    options: Annotated[ReviewOptions, _none_as(dict)] = Field(default_factory=ReviewOptions)

    def reviewed_id(self) -> str | None:
        """The agent node under review: ``options.reviews``, else the single dependency."""
        if self.options.reviews is not None:
            return self.options.reviews
        return self.depends_on[0] if len(self.depends_on) == 1 else None


AnyNodeFile = Annotated[AgentNodeFile | ReviewNodeFile, Field(discriminator="type")]


class WorkflowFile(FileModel):
    """A whole ``<slug>.yaml``."""

    slug: Slug
    name: Text
    description: str = ""
    agents: Annotated[dict[Identifier, AgentFile], Field(min_length=1)]
    nodes: Annotated[list[AnyNodeFile], Field(min_length=1)]
    mcp_servers: Annotated[dict[Identifier, McpServerFile], _none_as(dict)] = Field(
        default_factory=dict
    )
    budget: BudgetFile | None = None

    def graph(self) -> dict[str, list[str]]:
        return {node.id: node.depends_on for node in self.nodes}

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        """Cross-references, in the order a reader would fix them: ids, then what each node
        names, then the graph as a whole, then what each review points at."""
        ids: set[str] = set()
        for node in self.nodes:
            if node.id in ids:
                raise reference_error("duplicate node id", node_id=node.id, field="id")
            ids.add(node.id)
        for node in self.nodes:
            if isinstance(node, AgentNodeFile) and node.agent not in self.agents:
                raise reference_error(f"unknown agent {node.agent!r}", node_id=node.id, field="agent")
            for dep in node.depends_on:
                if dep not in ids:
                    raise reference_error(f"unknown node {dep!r}", node_id=node.id, field="depends_on")
        for agent_id, agent in self.agents.items():
            for index, tool in enumerate(agent.tools):
                if tool.mcp is not None and tool.mcp not in self.mcp_servers:
                    raise PydanticCustomError(
                        "workflow_reference", "unknown MCP server {server} (not in mcp_servers)",
                        {"server": repr(tool.mcp),
                         "path": ["agents", agent_id, "tools", index, "mcp"]},
                    )
        cycle = graph.find_cycle(self.graph())
        if cycle:
            raise reference_error("dependency cycle: " + " -> ".join(cycle), node_id=cycle[0])
        for node in self.nodes:
            if isinstance(node, ReviewNodeFile):
                self._check_review(node)
        return self

    def _check_review(self, review: ReviewNodeFile) -> None:
        target = review.reviewed_id()
        where = {"node_id": review.id, "field": "options.reviews"}
        if target is None:
            raise reference_error(
                "required when the review does not have exactly one dependency "
                "(it cannot guess which agent node it reviews)",
                **where,
            )
        nodes = {node.id: node for node in self.nodes}
        if target not in nodes:
            raise reference_error(f"unknown node {target!r}", **where)
        if not isinstance(nodes[target], AgentNodeFile):
            raise reference_error(f"{target!r} is not an agent node", **where)
        if target not in graph.upstream(self.graph(), review.id):
            raise reference_error(
                f"{target!r} is not upstream of this review (add it to depends_on)", **where
            )
