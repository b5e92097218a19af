"""A small MCP server shipped for the tool demo: a fact desk and a notebook.

It is a real MCP server (the ``mcp`` SDK's ``MCPServer`` over stdio), started by the
engine for the ``tool-desk`` workflow's archivist (``command: python``, ``args: [-m,
workflows.tools.demo_mcp_server]``), so the demo shows MCP tool calls with no key and no
network. ``lookup_fact`` is read-only (safe to repeat); ``save_note`` writes (the workflow
asks a human before it runs).
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

server = MCPServer("meeting-desk")

FACTS = {
    "market": "Urban cargo bike sales grew 18% a year in 2023-2025 (industry estimate).",
    "pricing": "Comparable subscription services charge 89-129 EUR a month.",
    "risk": "Battery certification (EN 15194) takes 10-14 weeks.",
    "team": "Two engineers and one designer are free from next quarter.",
}

NOTES: list[str] = []


@server.tool()
def lookup_fact(
    topic: Annotated[str, Field(description="market, pricing, risk or team", examples=["market"])],
) -> str:
    """Look up one reference fact for the meeting by topic."""
    for key, fact in FACTS.items():
        if key in topic.lower():
            return fact
    return f"no fact on file for {topic!r}; topics: {', '.join(FACTS)}"


@server.tool()
def save_note(text: Annotated[str, Field(description="The note to keep", max_length=2000)]) -> str:
    """Save a note in the meeting's notebook."""
    NOTES.append(text)
    return f"saved note #{len(NOTES)}"


if __name__ == "__main__":
    server.run()
