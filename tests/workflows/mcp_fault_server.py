"""A real MCP server (the SDK's own ``MCPServer`` over stdio) whose tools misbehave on purpose:
the engine's tests start it as an agent's MCP server.

Run as ``python tests/workflows/mcp_fault_server.py`` (stdio; with ``MCP_HTTP_PORT`` set it
serves streamable HTTP on 127.0.0.1 at ``/mcp`` instead); it writes its pid to the file named by
``MCP_PID_FILE`` (if set) so a test can check that the process was reaped.
"""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("faults")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def hang(seconds: float = 60) -> str:
    """Sleep, then answer (longer than any test waits)."""
    time.sleep(seconds)
    return "woke up"


@server.tool()
def die() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def big(size: int = 5000) -> str:
    """Answer ``size`` characters."""
    return "x" * size


@server.tool()
def env_names() -> str:
    """The names of this process's environment variables (to check what it was given)."""
    return " ".join(sorted(os.environ))


@server.tool()
def fail() -> str:
    """Raise inside the tool (the server reports it as an error result)."""
    raise RuntimeError("the fault server's tool failed")


if __name__ == "__main__":
    if os.environ.get("MCP_PID_FILE"):
        with open(os.environ["MCP_PID_FILE"], "a") as pids:
            pids.write(f"{os.getpid()}\n")
    if os.environ.get("MCP_HTTP_PORT"):  # streamable HTTP on 127.0.0.1:<port>/mcp
        server.run("streamable-http", host="127.0.0.1", port=int(os.environ["MCP_HTTP_PORT"]))
    else:
        server.run()
