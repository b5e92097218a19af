"""AG-UI: every session can be watched and driven by any AG-UI client (docs/agui.md).

``translate`` turns our logged events into AG-UI events (the official ``ag-ui-protocol``
models); ``stream`` serves them as server-sent events from the event log and then live from
the hub, each carrying our ``seq`` as its SSE id so a dropped stream resumes exactly;
``views`` are the HTTP endpoints (``POST /agui/<workflow>/``, ``GET
/agui/sessions/<id>/events``).
"""
