"""``DefinitionError`` and how a pydantic ``ValidationError`` becomes one.

Whoever reads the error is editing a YAML file, so it names the file, the node (by id, as
the file does, rather than pydantic's list index) and the path to the bad field inside it,
then pydantic's own message:
``workflows/definitions/bad.yaml: node 'x': options.max_tokens: Input should be greater
than or equal to 1``. Only the first error is reported, as the hand-written checks did:
the message stays one line for ``manage.py check`` and names one node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from realtime.vocabulary import NodeType
from workflows.definitions.models import ID_RE


class DefinitionError(ValueError):
    """A workflow file is invalid; the message names the file and, if any, the node."""

    def __init__(self, message: str, *, source: str, node_id: str | None = None) -> None:
        self.source = source
        self.node_id = node_id
        self.detail = message
        where = f"{source}: node {node_id!r}: " if node_id else f"{source}: "
        super().__init__(where + message)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _message(error: Mapping[str, Any]) -> str:
    """Pydantic's message, except where it would speak of pydantic's internals."""
    kind = error["type"]
    if kind in ("model_type", "model_attributes_type"):  # it names the model class
        return f"Input should be a mapping, got {_type_name(error['input'])}"
    if kind == "union_tag_not_found":  # "Unable to extract tag using discriminator 'type'"
        return "Field required"
    if kind == "union_tag_invalid":  # it lists the tags as enum reprs
        return "Input should be " + " or ".join(repr(str(name)) for name in NodeType)
    return error["msg"]


def _format_path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":  # the mapping key itself is bad, not its value
            text += " (key)"
        else:
            text += f".{part}" if text else str(part)
    return text


def _node_at(data: Any, index: int) -> Mapping[str, Any]:
    nodes = data.get("nodes") if isinstance(data, Mapping) else None
    if isinstance(nodes, list) and 0 <= index < len(nodes) and isinstance(nodes[index], Mapping):
        return nodes[index]
    return {}


def _locate(error: Mapping[str, Any], data: Any) -> tuple[str | None, list[Any]]:
    """``(node id or None, path)`` for one pydantic error on the file ``data``."""
    context = error.get("ctx") or {}
    if "path" in context:  # a cross-reference outside the nodes (an agent's MCP server)
        return None, list(context["path"])
    if "node_id" in context:  # a cross-reference error (models.reference_error)
        field = context.get("field")
        return context["node_id"], [field] if field else []
    loc = list(error["loc"])
    about_the_type = error["type"] in ("union_tag_not_found", "union_tag_invalid")
    if about_the_type:
        loc.append("type")
    if len(loc) < 2 or loc[0] != "nodes" or not isinstance(loc[1], int):
        return None, loc
    raw = _node_at(data, loc[1])
    rest = loc[2:]
    # Inside a node, pydantic puts the discriminator's value (the node type) before the field.
    if rest and not about_the_type and rest[0] == raw.get("type"):
        rest = rest[1:]
    node_id = raw.get("id")
    if isinstance(node_id, str) and ID_RE.fullmatch(node_id):
        return node_id, rest
    return None, [*loc[:2], *rest]  # no usable id: say where the node is instead


def definition_error(exc: ValidationError, data: Any, *, source: str) -> DefinitionError:
    """The first error of ``exc`` (raised validating ``data``) as a DefinitionError."""
    error = exc.errors(include_url=False)[0]
    node_id, path = _locate(error, data)
    message = _message(error)
    if path:
        message = f"{_format_path(path)}: {message}"
    return DefinitionError(message, source=source, node_id=node_id)
