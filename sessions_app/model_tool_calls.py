"""Tool calls (in their own module for size; ``sessions_app.models`` imports them so Django
finds them): what each call an agent made asked, what came back, how it ended."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from realtime.vocabulary import ToolCallStatus


class ToolCall(models.Model):
    """One tool call an agent made: what it asked, what came back, how it ended."""

    session = models.ForeignKey("sessions_app.Session", on_delete=models.CASCADE, related_name="tool_calls")
    node_id = models.CharField(max_length=64)
    agent_id = models.CharField(max_length=64, blank=True, default="")
    round = models.PositiveIntegerField(default=1)
    call_id = models.CharField(max_length=100)
    tool = models.CharField(max_length=200, db_index=True)
    server = models.CharField(max_length=64, blank=True, default="", help_text="MCP server id")
    arguments = models.TextField(blank=True, default="")
    requires_approval = models.BooleanField(default=False)
    status = models.CharField(
        max_length=20, choices=ToolCallStatus.choices, default=ToolCallStatus.RUNNING
    )
    result = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["session", "started_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "call_id"], name="tool_call_unique_id")
        ]

    def __str__(self) -> str:
        return f"{self.tool} ({self.node_id} #{self.round}): {self.status}"
