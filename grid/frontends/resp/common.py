"""What the command modules share: Redis's error replies, argument parsing, grid results.

Error texts are Redis 7.0's, word for word (server.c's shared objects and the
commands' own addReplyError calls): clients and test suites match on them.
A grid status a command cannot turn into a Redis answer becomes an error too:
OUT_OF_MEMORY is Redis's OOM, TOO_LARGE and INVALID_ARGUMENT are -ERR with
grid's reason, NOT_OWNER and UNAVAILABLE (an owner unreachable, a partition
moving) are -TRYAGAIN, the code Redis Cluster uses for "retry this shortly".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from grid.frontends.resp.parser import parse_ll
from grid.frontends.resp.replies import error
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.ops import KeyPlan

SYNTAX = error("ERR syntax error")
NOT_INTEGER = error("ERR value is not an integer or out of range")
NOT_FLOAT = error("ERR value is not a valid float")
NO_SUCH_KEY = error("ERR no such key")
TOO_BIG = error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
OOM = error("OOM command not allowed when used memory > 'maxmemory'.")
CAS_RETRIES = 100
"""How often a read-modify-write retries when another writer changed the key between
its read and its write before it gives up with -TRYAGAIN (each retry is a round trip;
100 losses in a row means a key written far faster than it can be read)."""


def wrong_args(name: str) -> bytes:
    return error(f"ERR wrong number of arguments for '{name}' command")


def expire_time_error(name: str) -> bytes:
    return error(f"ERR invalid expire time in '{name}' command")


def now_ms() -> int:
    """Wall-clock milliseconds: absolute expiry times (EXAT, EXPIREAT) are turned into a
    time to live against it, and TTLs back into times (EXPIRETIME)."""
    return time.time_ns() // 1_000_000


def int_arg(arg: bytes) -> int | None:
    """A 64-bit integer argument (Redis's getLongLongFromObject), or None."""
    return parse_ll(arg)


def result_error(r: pb.Result | KeyPlan) -> bytes:
    """The Redis error for a grid result that is not an answer."""
    status = r.status
    if status == pb.OUT_OF_MEMORY:
        return OOM
    if status == pb.INVALID_ARGUMENT:
        if r.error == "key is empty":
            return error("ERR grid does not store empty keys")
        return error(f"ERR {r.error}")
    if status == pb.TOO_LARGE:
        return error(f"ERR {r.error}")
    if status in (pb.NOT_OWNER, pb.UNAVAILABLE):
        return error(f"TRYAGAIN {r.error or 'the key is not available now; retry'}")
    return error(f"ERR {pb.Status.Name(status)}: {r.error}")


def failed(r: pb.Result) -> bool:
    """Whether a result is neither an answer nor an absence."""
    return r.status != pb.OK and r.status != pb.NOT_FOUND


def cas_exhausted(name: str) -> bytes:
    return error(
        f"TRYAGAIN '{name}' lost {CAS_RETRIES} races in a row with other writers of the key"
    )
