"""Statuses and exceptions shared by the member, the client SDK and the embedded node.

A status travels on the wire with every result; an exception is how the SDK
reports a status that is not an answer (`NOT_FOUND` is an answer: `get`
returns None). One exception class per status, all under `GridError`, so
callers can catch exactly what they can handle.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Mirrors `grid.v1.Status` in proto/grid.proto (a test keeps them equal)."""

    OK = 0
    NOT_FOUND = 1
    CAS_FAILED = 2
    INVALID_ARGUMENT = 3
    TOO_LARGE = 4
    OUT_OF_MEMORY = 5
    NOT_OWNER = 6
    UNAVAILABLE = 7


class GridError(Exception):
    """An operation failed; `status` says how and the message says why."""

    status: Status = Status.UNAVAILABLE

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.status.name)
        self.message = message


class CasFailed(GridError):
    """A put condition (if_absent, if_present, if_version) did not hold."""

    status = Status.CAS_FAILED


class InvalidArgument(GridError):
    status = Status.INVALID_ARGUMENT


class TooLarge(GridError):
    status = Status.TOO_LARGE


class OutOfMemory(GridError):
    status = Status.OUT_OF_MEMORY


class NotOwner(GridError):
    status = Status.NOT_OWNER


class Unavailable(GridError):
    status = Status.UNAVAILABLE


class DeadlineExceeded(Unavailable):
    """The call's deadline passed before the member answered."""


class AuthenticationFailed(GridError):
    """The member refused this client's credentials: its TLS certificate (or none where one
    is required) or its token. Never retried: trying again cannot help."""


class CodecError(GridError):
    """A value could not be encoded or decoded by the map's codec (client side)."""

    status = Status.INVALID_ARGUMENT


_BY_STATUS: dict[Status, type[GridError]] = {
    cls.status: cls
    for cls in (CasFailed, InvalidArgument, TooLarge, OutOfMemory, NotOwner, Unavailable)
}


def error_for(status: int, message: str) -> GridError:
    """The exception that reports `status` (never called with OK or NOT_FOUND)."""
    cls = _BY_STATUS.get(Status(status), GridError)
    return cls(message)
