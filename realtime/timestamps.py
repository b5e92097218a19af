"""The protocol's one clock format: ISO 8601 in UTC with milliseconds and a ``Z``.

Every timestamp a viewer receives (envelopes, snapshots, deadlines) goes through here, so
the page can compare them as strings and parse them all the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_ms(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms_or_none(moment: datetime | None) -> str | None:
    return iso_ms(moment) if moment is not None else None


def now_iso() -> str:
    return iso_ms(utc_now())


def epoch_ms(timestamp: str) -> int:
    """A protocol timestamp as milliseconds since the epoch (AG-UI's ``timestamp``)."""
    return round(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


def plus_seconds(timestamp: str, seconds: float) -> str:
    """A protocol timestamp moved by ``seconds`` (a review's deadline from its request)."""
    return iso_ms(datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(seconds=seconds))
