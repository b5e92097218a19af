"""Built-in tools: a function, decorated, is a tool; its JSON schema comes from its signature.

``@builtin_tool`` reads the parameters (their annotations, defaults and ``Field``
descriptions) into a pydantic model: that model is both the JSON schema sent to the model
and the validator of the arguments the model sends back, so the schema can never drift from
the code. The first parameter, if annotated ``ToolContext``, is the call's context (the
session it runs in), not an argument.

Adding a tool is one decorated function in ``workflows/tools/builtin.py``::

    @builtin_tool
    async def word_count(context: ToolContext, text: str) -> str:
        \"\"\"Count the words of a text.\"\"\"
        return str(len(text.split()))
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model


@dataclass(frozen=True)
class ToolContext:
    """What a built-in tool may know of the call: the session and node it runs for, and a
    reader of the session's transcript (the run store's, so tools never touch models)."""

    session_id: str
    node_id: str
    search_transcript: Callable[..., Awaitable[list[dict[str, str]]]]


@dataclass(frozen=True)
class BuiltinTool:
    name: str
    description: str
    arguments: type[BaseModel]
    function: Callable[..., Any]
    takes_context: bool

    @property
    def schema(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    async def call(self, context: ToolContext, arguments: BaseModel) -> Any:
        kwargs = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        args = (context,) if self.takes_context else ()
        result = self.function(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


BUILTIN_TOOLS: dict[str, BuiltinTool] = {}


class _Arguments(BaseModel):
    # A model that invents a parameter gets an error it can read, not a silent drop.
    model_config = ConfigDict(extra="forbid")


def builtin_tool(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``function`` as the built-in tool named after it."""
    name = function.__name__
    if name in BUILTIN_TOOLS:
        raise ValueError(f"built-in tool {name!r} is defined twice")
    hints = typing.get_type_hints(function, include_extras=True)
    params = list(inspect.signature(function).parameters.values())
    takes_context = bool(params) and hints.get(params[0].name) is ToolContext
    fields: dict[str, Any] = {}
    for param in params[1:] if takes_context else params:
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    arguments = create_model(f"{name}_arguments", __base__=_Arguments, **fields)
    description = inspect.cleandoc(function.__doc__ or name)
    BUILTIN_TOOLS[name] = BuiltinTool(
        name=name, description=description, arguments=arguments, function=function,
        takes_context=takes_context,
    )
    return function


def builtin_names() -> list[str]:
    """Every registered name (``workflows.tools`` imports ``builtin`` so all are here)."""
    return sorted(BUILTIN_TOOLS)


def get_builtin(name: str) -> BuiltinTool | None:
    return BUILTIN_TOOLS.get(name)
