"""Django admin for reviewers looking back at meeting sessions and what they cost.

Runtime data (nodes, usage, transcript, reviews, events, command receipts) is written only
by the engine and services, so the admin shows it read-only everywhere. Anyone who may view
sessions may view their parts: a staff user granted only ``view_session`` sees the whole
session, its event log and the summary. Members are the one editable part (through the
member services, ``admin/members.py``).
"""

from sessions_app.admin import members, runtime, sessions, tokens

__all__ = ["members", "runtime", "sessions", "tokens"]
