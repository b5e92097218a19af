"""Django admin for reviewers looking back at meeting sessions and what they cost.

Runtime data (nodes, usage, transcript, reviews, events, command receipts) is written only
by the engine and services, so the admin shows it read-only everywhere. Anyone who may view
sessions may view their parts: a staff user granted only ``view_session`` sees the whole
session, its event log and the summary. Members and the budget are the editable parts of a
session (members through the member services, ``admin/members.py``); model prices are edited
in their own screen (``admin/prices.py``).
"""

from sessions_app.admin import members, prices, runtime, sessions, tokens

__all__ = ["members", "prices", "runtime", "sessions", "tokens"]
