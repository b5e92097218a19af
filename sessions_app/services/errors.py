"""What a service refuses, with the protocol's error code (``realtime.protocol.ERROR_CODES``)."""

from __future__ import annotations


class ServiceError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidState(ServiceError):
    code = "invalid_state"


class NotFound(ServiceError):
    code = "not_found"


class Forbidden(ServiceError):
    code = "forbidden"


class InvalidData(ServiceError):
    code = "invalid_data"


class LinkUnusable(InvalidState):
    """A share link that was revoked, has expired or is used up (the join page says which)."""
