"""Workflow definitions (the dicts a workflow YAML file holds) for the real-process scenarios:
scripted agents only, sized by how many tokens each streams."""

from __future__ import annotations

from typing import Any


def agent(node_id: str, *deps: str, tokens: int, thinking: bool = False, agent_id: str = "") -> dict[str, Any]:
    return {"id": node_id, "type": "agent", "agent": agent_id or f"a_{node_id}",
            "depends_on": list(deps), "options": {"max_tokens": tokens, "thinking": thinking}}


def workflow(slug: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    agents = {
        node["agent"]: {"name": node["id"].title(), "role": "Talks", "model": "scripted-small",
                        "provider": "scripted", "prompt": f"You talk about {node['id']} plans and risks."}
        for node in nodes if node["type"] == "agent"
    }
    return {"slug": slug, "name": slug, "description": "fault injection", "agents": agents,
            "nodes": list(nodes)}


def chain_workflow(tokens: int = 40) -> dict[str, Any]:
    """brief -> (left, right in parallel) -> wrap: streaming, thinking, a parallel stage."""
    return workflow(
        "fault-chain",
        agent("brief", tokens=tokens // 2, thinking=True),
        agent("left", "brief", tokens=tokens),
        agent("right", "brief", tokens=tokens),
        agent("wrap", "left", "right", tokens=tokens // 2),
    )
