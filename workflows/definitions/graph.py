"""The dependency graph of a workflow, through the standard library's ``graphlib``.

A graph here is a mapping ``node id -> ids it depends on`` in file order. ``graphlib``
finds cycles (its ``CycleError`` carries one, which the error message shows) and gives the
order; the only thing added is the tie rule: nodes that become ready together keep their
file order, so a run starts them, and a page lists them, in the order the author wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from graphlib import CycleError, TopologicalSorter

Graph = Mapping[str, Sequence[str]]


def find_cycle(graph: Graph) -> list[str] | None:
    """One dependency cycle as ``[a, b, ..., a]`` (each feeds the next), or None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None


def topological_order(graph: Graph) -> list[str]:
    """Dependencies first, in rounds: each round is every node whose dependencies are all in
    earlier rounds, in file order. Raises ``graphlib.CycleError`` on a cycle."""
    position = {node_id: index for index, node_id in enumerate(graph)}
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda node_id: position.get(node_id, len(position)))
        order.extend(ready)
        sorter.done(*ready)
    return order


def upstream(graph: Graph, node_id: str) -> set[str]:
    """Every node ``node_id`` depends on, directly or not."""
    return _reachable(graph, node_id)


def downstream(graph: Graph, node_id: str) -> set[str]:
    """Every node that depends on ``node_id``, directly or not."""
    children: dict[str, list[str]] = {current: [] for current in graph}
    for current, deps in graph.items():
        for dep in deps:
            children.setdefault(dep, []).append(current)
    return _reachable(children, node_id)


def _reachable(edges: Graph, start: str) -> set[str]:
    found: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(edges.get(current, ()))
    return found
