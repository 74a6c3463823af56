"""Grid operations on the RESP map, and the read-modify-write loop for commands that need one.

Which commands are one grid operation and which are a loop, and why:

- One operation each (atomic on the key's primary, batched with their pipeline):
  GET, SET without GET/KEEPTTL (PUT with IF_ABSENT / IF_PRESENT for NX / XX), SETNX,
  SETEX, PSETEX, MGET, MSET, DEL, UNLINK, EXISTS, TYPE, TOUCH, TTL, PTTL, EXPIRE and
  friends without NX/XX/GT/LT, INCR, INCRBY, DECR, DECRBY, DBSIZE, FLUSHDB.
- INCR and its family use grid's own INCR with `decimal` set (a field added to the
  Op for this): the counter is stored as the decimal string Redis stores, so GET
  after INCR reads b"11" and SET k 10 then INCR k works, and the increment stays
  one atomic operation on the primary. (The SDK's counters are msgpack integers;
  the two kinds are different values and do not mix.)
- A compare-and-set loop (`rmw` below) for the rest: GETSET, SET ... GET, SET ...
  KEEPTTL, GETDEL, GETEX with options, APPEND, SETRANGE, INCRBYFLOAT, EXPIRE with
  NX/XX/GT/LT, PERSIST, RENAME, RENAMENX (MSETNX, many keys, checks, writes with
  IF_ABSENT and undoes: commands/strings.py). Each reads the key (value, version,
  TTL), computes, and writes with IF_VERSION (IF_ABSENT if the key was absent;
  DELETE takes IF_VERSION too), retrying when another writer got in between. Why a
  loop and not an op per command: these are rare next to GET/SET/INCR, a loop is
  correct (no write between the read and the write is lost) with no new code on
  the replication and persistence paths, and each would otherwise be a new opcode
  in the member's executor, store and tests. The cost is two round trips to the
  primary instead of one. Expiry times travel as absolute times (`expire_at_ms`,
  another Op field added for this): a kept TTL stays to the millisecond, and
  PXAT or PEXPIREAT followed by PEXPIRETIME give back the same number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from grid.frontends.ops import Runner
from grid.frontends.resp.common import CAS_RETRIES, cas_exhausted, failed, result_error
from proto import grid_pb2 as pb

GET, PUT, DELETE, EXPIRE, TTL, CONTAINS = pb.GET, pb.PUT, pb.DELETE, pb.EXPIRE, pb.TTL, pb.CONTAINS
INCR, TOUCH, SIZE, SCAN, CLEAR = pb.INCR, pb.TOUCH, pb.SIZE, pb.SCAN, pb.CLEAR
IF_ABSENT, IF_PRESENT, IF_VERSION = pb.IF_ABSENT, pb.IF_PRESENT, pb.IF_VERSION


class Current(NamedTuple):
    """A key as a read found it: its value (None: absent), version, and when it expires
    (wall ms on its primary, 0 = never)."""

    value: bytes | None
    version: tuple[int, int]
    expire_at: int

    @classmethod
    def of(cls, r: pb.Result) -> Current:
        if r.status == pb.NOT_FOUND:
            return cls(None, (0, 0), 0)
        return cls(r.value, (r.version_ts, r.version_member), r.expire_at_ms)


def put_over(m: str, key: bytes, cur: Current, value: bytes, expire_at: int) -> pb.Op:
    """A write that succeeds only if the key is still as `cur` saw it; it expires at
    `expire_at` (wall ms, 0 = never)."""
    if cur.value is None:
        return pb.Op(code=PUT, map=m, key=key, value=value, expire_at_ms=expire_at,
                     condition=IF_ABSENT)  # fmt: skip
    ts, member = cur.version
    return pb.Op(code=PUT, map=m, key=key, value=value, expire_at_ms=expire_at,
                 condition=IF_VERSION, expected_ts=ts, expected_member=member)  # fmt: skip


def delete_over(m: str, key: bytes, cur: Current) -> pb.Op:
    """A delete that succeeds only if the key is still as `cur` saw it (it exists)."""
    ts, member = cur.version
    return pb.Op(code=DELETE, map=m, key=key, condition=IF_VERSION, expected_ts=ts,
                 expected_member=member)  # fmt: skip


Step = Callable[[Current], "tuple[Sequence[pb.Op], bytes]"]


async def rmw(runner: Runner, m: str, key: bytes, name: str, step: Step) -> bytes:
    """Read `key`, let `step` choose the writes and the reply, write, and start over if
    a write lost to another writer (CAS_FAILED). No writes: the reply goes at once."""
    get = pb.Op(code=GET, map=m, key=key)
    for _ in range(CAS_RETRIES):
        r = (await runner.call([get]))[0]
        if failed(r):
            return result_error(r)
        ops, reply = step(Current.of(r))
        if not ops:
            return reply
        results = await runner.call(ops)
        if any(w.status == pb.CAS_FAILED for w in results):
            continue
        for w in results:
            if failed(w):
                return result_error(w)
        return reply
    return cas_exhausted(name)
