"""The built-in tools. Each is one decorated function: its name, docstring and signature are
what the model sees (``registry.builtin_tool``).

All three are read-only and so safe to repeat after a take-over (docs/engine.md).
"""

from __future__ import annotations

import ast
import math
import operator
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from workflows.tools.registry import ToolContext, builtin_tool


class ToolInputError(ValueError):
    """The arguments were well-typed but cannot be used (shown to the model as the error)."""


_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100


def _evaluate(node: ast.AST) -> int | float:
    """Numbers, + - * / // % **, parentheses, a few functions and constants: nothing else is
    evaluated (no names, attributes, calls of anything else), so no input can run code, and
    exponents and magnitudes are bounded so no input can exhaust the CPU or memory."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolInputError(f"exponent larger than {MAX_EXPONENT}")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ToolInputError("result out of range")
        return value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ToolInputError(f"not allowed in an expression: {ast.dump(node)[:60]}")


@builtin_tool
def calculator(
    expression: Annotated[str, Field(description="Arithmetic, e.g. (12.5 * 4) / 3 + sqrt(2)",
                                     examples=["(109 * 12) * 0.85"])],
) -> str:
    """Evaluate an arithmetic expression exactly as written: numbers, + - * / // % **,
    parentheses, sqrt, abs, round, min, max, pi and e."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolInputError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolInputError("not an arithmetic expression") from None
    try:
        value = _evaluate(tree)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, ToolInputError):
            raise
        raise ToolInputError(str(exc) or exc.__class__.__name__) from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


@builtin_tool
def current_time(
    timezone: Annotated[str, Field(description="IANA time zone, e.g. Europe/Paris")] = "UTC",
) -> str:
    """The current date and time in a time zone (ISO 8601)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolInputError(f"unknown time zone {timezone!r}") from None
    return datetime.now(zone).isoformat(timespec="seconds")


@builtin_tool
async def transcript_search(
    context: ToolContext,
    query: Annotated[str, Field(min_length=1, max_length=200, description="Words to look for",
                                examples=["calculator"])],
    limit: Annotated[int, Field(ge=1, le=20)] = 5,
) -> str:
    """Search this meeting's transcript (agents' answers and participants' messages) for
    passages containing all the words of the query; the most recent first."""
    hits = await context.search_transcript(
        session_id=context.session_id, query=query, limit=limit
    )
    if not hits:
        return "no match"
    return "\n".join(f"[{hit['who']}] {hit['excerpt']}" for hit in hits)
