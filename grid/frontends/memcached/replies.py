"""memcached's reply lines, and grid's failures in its words.

A grid status that is neither an answer nor an absence becomes a SERVER_ERROR, the
code memcached uses for "the server could not do it": OUT_OF_MEMORY is memcached's
"out of memory storing object", TOO_LARGE its "object too large for cache", and
NOT_OWNER/UNAVAILABLE (an owner unreachable, a partition moving) say to retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.ops import KeyPlan

ERROR = b"ERROR\r\n"
STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
END = b"END\r\n"
OK = b"OK\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"


def failed(r: pb.Result) -> bool:
    """Whether a result is neither an answer nor an absence (nor a lost condition)."""
    return r.status not in (pb.OK, pb.NOT_FOUND, pb.CAS_FAILED)


def result_error(r: pb.Result | KeyPlan) -> bytes:
    """The SERVER_ERROR for a grid result that is not an answer."""
    status = r.status
    if status == pb.OUT_OF_MEMORY:
        return NO_MEMORY
    if status == pb.TOO_LARGE:
        return TOO_LARGE
    if status in (pb.NOT_OWNER, pb.UNAVAILABLE):
        why = r.error or "the key is not available now"
        return f"SERVER_ERROR temporarily unavailable: {why}; retry\r\n".encode()
    return f"SERVER_ERROR {pb.Status.Name(status)}: {r.error}\r\n".encode()
