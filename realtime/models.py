"""The event log: every logged event of a session, in ``seq`` order, exactly as broadcast.

``SessionLog`` is the log's head: its id is the session's id (realtime knows nothing else of
sessions) and ``last_seq`` is the highest seq stored, advanced in the same transaction as the
insert (a row lock on PostgreSQL, the write lock on SQLite), so any number of processes may
append to one session's log and seq stays gap-free and unique. The app that owns sessions
opens a log when it creates a session and deletes it with the session (its events go too).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from realtime.vocabulary import Access, EventName


class SessionLog(models.Model):
    session_id = models.UUIDField(primary_key=True, editable=False)
    last_seq = models.BigIntegerField(default=0)
    # Fenced events are stored only while they carry this value (eventlog.set_fence).
    fence = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "session event log"

    def __str__(self) -> str:
        return f"log of {self.session_id} (seq {self.last_seq})"


class SessionEvent(models.Model):
    """One logged event (the envelope is rebuilt from these fields)."""

    session = models.ForeignKey(SessionLog, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    event = models.CharField(max_length=40, choices=EventName.choices)
    node_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (null = no node)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="log_unique_seq")
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event}"


class ApiToken(models.Model):
    """A programmatic client's credential (AG-UI, WebSocket): only its SHA-256 digest is kept.

    The secret is shown once, when the token is made (``realtime.tokens.issue_token``); a
    token acts as its user, never beyond ``scope`` (watch: see only; control: drive too).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=12, editable=False, help_text="first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=10, choices=[(a.value, a.value) for a in Access],
                             default=Access.WATCH)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else self.scope
        return f"{self.prefix}… ({self.user}, {state})"
