"""Workflow files on disk: strict YAML, the file-name rule, and the directory as a whole.

Files are read on every use rather than cached, so an edited file takes effect for the next
session without a restart; ``validate_all`` is run at start-up by the ``workflows.E001``
system check (``workflows/apps.py``), so a broken file stops ``runserver``, ``migrate`` and
``manage.py check`` instead of failing a session later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from workflows.definitions.errors import DefinitionError
from workflows.definitions.models import SLUG_RE
from workflows.definitions.spec import WorkflowDefinition


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
    """Relative to the project when inside it, so messages read ``workflows/definitions/x.yaml``."""
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
    """The start-up check: refuse to serve with a broken or missing workflow directory."""
    files = _files()
    if not files:
        raise DefinitionError("no workflow files found", source=_display_path(_workflow_dir()))
    for path in files:
        load_file(path)
