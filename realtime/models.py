"""The event log: every logged event of a session, in ``seq`` order, exactly as broadcast.

``SessionLog`` is the log's head: its id is the session's id (realtime knows nothing else of
sessions) and ``last_seq`` is the highest seq stored, advanced in the same transaction as the
insert (a row lock on PostgreSQL, the write lock on SQLite), so any number of processes may
append to one session's log and seq stays gap-free and unique. The app that owns sessions
opens a log when it creates a session and deletes it with the session (its events go too).
"""

from __future__ import annotations

from django.db import models

from realtime.vocabulary import EventName


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
