"""Declarative workflow files: the format, loading, and strict validation.

Workflows are data, not code, so that a new meeting format is a reviewed YAML file rather
than an engine change. Validation is strict (unknown keys are errors, every reference is
checked) because a typo in a file would otherwise surface as a half-run session in front of
users; the ``workflows.E001`` system check runs ``validate_all()`` at start-up, so a bad
shipped file stops ``runserver`` and ``manage.py check`` (and so the deploy).

The package: ``models`` (the format as pydantic models: field checks and cross-references),
``graph`` (order and cycles through ``graphlib``), ``errors`` (``DefinitionError``, made from
pydantic's errors), ``spec`` (the frozen objects the engine runs) and ``loading`` (files).
Everything the rest of the code uses is importable from here.

File format (``<WORKFLOW_DIR>/<slug>.yaml``; the file name must equal the slug)::

    slug: demo                       # required, ^[a-z0-9][a-z0-9-]{0,49}$
    name: Demo meeting               # required, shown in lists (sorted by name)
    description: What this is for.   # optional, default ""
    agents:                          # required mapping: agent id -> agent, at least one
      moderator:                     # agent id: ^[a-z][a-z0-9_]{0,39}$
        name: Moderator              # required, display name
        role: Keeps the meeting on track   # required, one line
        model: scripted-small        # required; a model without a price runs as "price unknown"
        provider: scripted           # optional: scripted (default) | openai | agui
        prompt: You are ...          # required, the system prompt
        tools: [calculator]          # optional: built-in tools and MCP servers' tools
        max_tool_rounds: 4           # optional, 1..50 (docs/engine.md, "Tools")
        agui:                        # required with provider agui, forbidden otherwise
          url: https://host/path     # the remote AG-UI endpoint (http or https, no user@)
          headers: {Authorization: Bearer ${AGUI_TOKEN}}   # optional; ${NAME}: env, per call
          interrupt_timeout: 300     # optional, seconds >= 1 or null (forever)
          interrupt_default: reject  # optional: approve | reject
    mcp_servers: {}                  # optional: id -> {command, args, env} or {url}
    budget:                          # optional: the default budget of its sessions
      usd: 0.50                      # required, > 0 (USD)
      warn_at: 0.8                   # optional, 0 < x < 1: warn at this share of the budget
      timeout: 300                   # optional, seconds a budget request waits (null: forever)
      default_decision: reject       # optional: reject (stop the run, the default) | approve
                                     # (raise the budget by usd) when the timeout passes
    nodes:                           # required, at least one node
      - id: brief                    # required, unique, ^[a-z][a-z0-9_]{0,39}$
        type: agent                  # required: agent | human_review
        agent: moderator             # required for agent nodes, forbidden for reviews
        title: Brief                 # optional; default: agent name / "Human review"
        depends_on: []               # optional list of node ids, no repeats, default []
        options: {}                  # optional, see below
      - id: review
        type: human_review
        depends_on: [brief]
        options: {reviews: brief, reason: Check the brief, timeout: 300,
                  default_decision: approve, max_rounds: 2}

Required strings (names, roles, models, prompts, titles) must not be blank. Scalars are
taken as written: ``true`` is not a number, ``1`` is not a bool, ``5`` is not a string.
An optional key given with no value (YAML null) means its default, for ``title``,
``depends_on``, ``options`` and the agent node options below.

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
    ancestor of the review. ``reason`` str, shown to the reviewer (default, also for "":
    "Review the output of <title>"). ``timeout``: int seconds >= 1, or null to wait forever
    (default null). ``default_decision``: approve | reject (default approve), applied when the
    timeout expires; a timed-out reject counts as a rejection. ``max_rounds``: int >= 1
    (default 1), the number of reject-and-retry rounds: each of the first ``max_rounds``
    rejections sends the reviewed agent back to answer again and the review is asked
    again; once ``max_rounds`` rejections have been spent, the next review round is approved
    automatically with a note saying so, so a session can never loop forever.

A remote AG-UI agent (``provider: agui``, docs/engine.md "Remote AG-UI agents") runs its own
tools, so it has no ``tools``; its header names are HTTP tokens and their values one line.

The dependencies must not form a cycle. Any key not listed above, at any level, is an
error. ``DefinitionError`` messages name the file, the node and the path to the bad field,
e.g. ``workflows/definitions/bad.yaml: node 'x': depends_on: unknown node 'y'`` or
``workflows/definitions/bad.yaml: agents.moderator.model: String should not be blank``.
``WorkflowDefinition.to_dict()`` returns this same shape (with defaults filled in) so
sessions can store the definition they ran and read it back with ``from_dict``.
"""

from workflows.definitions.errors import DefinitionError
from workflows.definitions.loading import list_workflows, load_file, load_workflow, validate_all
from workflows.definitions.models import ID_RE, SLUG_RE
from workflows.definitions.spec import (
    AgentSpec,
    AguiSpec,
    BudgetSpec,
    McpServerSpec,
    NodeSpec,
    ToolSpec,
    WorkflowDefinition,
)

__all__ = [
    "ID_RE",
    "SLUG_RE",
    "AgentSpec",
    "AguiSpec",
    "BudgetSpec",
    "DefinitionError",
    "McpServerSpec",
    "NodeSpec",
    "ToolSpec",
    "WorkflowDefinition",
    "list_workflows",
    "load_file",
    "load_workflow",
    "validate_all",
]
