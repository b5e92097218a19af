"""Tools an agent may call: built-in Python functions and MCP servers' tools.

``registry`` holds the built-in tools (one decorated function each, its JSON schema taken
from its signature by pydantic), ``builtin`` defines them, ``mcp_servers`` connects to the
MCP servers a workflow names (the official ``mcp`` SDK), and ``toolbox`` is what one agent
node calls: the tools it may use, each call checked, timed, capped and never raised.
"""

# Registers the built-in tools (``registry.builtin_tool`` runs as ``builtin`` is imported).
from workflows.tools import builtin  # noqa: F401
