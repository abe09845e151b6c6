"""The domain error hierarchy every service raises.

Pure Python so that domain modules may import it; the one table mapping
these classes to gRPC status codes lives in `eventbooking.interceptors`.
"""

from __future__ import annotations


class DomainError(Exception):
    """A failure the caller caused or can act on; its message is shown to them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed: a missing field, a bad id, a number out of range."""


class NotFound(DomainError):
    """The request names something that does not exist."""


class AlreadyExists(DomainError):
    """The request would create something that exists already."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows it: sold out, insufficient funds."""


class Aborted(DomainError):
    """The request conflicts with an earlier one, or its work was compensated."""


class Unauthenticated(DomainError):
    """The caller did not say who it is, or said it wrongly."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class ResourceExhausted(DomainError):
    """The caller went past a limit; trying later may work."""


class Unavailable(DomainError):
    """A dependency is down for now; the same request may succeed later."""
