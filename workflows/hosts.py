"""Which hosts the engine may call (remote AG-UI agents, MCP servers over HTTP).

A workflow file names URLs, and workflow files can come from the admin; without a list, a
definition could make the server call anything it can reach (metadata endpoints, internal
services). Each kind of call has its own setting, read at call time.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


def host_allowed(url: str, allowed_hosts: Iterable[str]) -> bool:
    """Exact names, ``.example.com`` for it and its subdomains, ``*`` for any; empty: none."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for allowed in allowed_hosts:
        allowed = allowed.lower().strip()
        if allowed == "*" or host == allowed or (
            allowed.startswith(".") and (host == allowed[1:] or host.endswith(allowed))
        ):
            return True
    return False
