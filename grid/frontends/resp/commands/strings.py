"""String commands: GET, SET and its variants, MGET/MSET, APPEND, STRLEN, GETRANGE, SETRANGE.

Which of them are one grid operation and which a compare-and-set loop, and why:
grid/frontends/resp/keyspace.py. SET's options are parsed as Redis 7.0's
parseExtendedStringArgumentsOrReply parses them (the same function serves GETEX),
so conflicting options give the same "syntax error" in the same cases.

MSET and MSETNX are not isolated across partitions: each key is written
atomically, but another client may read some of an MSET's keys before the rest
are written (Redis Cluster refuses multi-key commands across slots instead).
MSETNX checks that no key exists, writes each with IF_ABSENT, and removes what it
wrote if one of them lost a race, answering 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid.frontends.ops import KeyPlan, Plan, Reply
from grid.frontends.resp.common import (
    NOT_INTEGER,
    SYNTAX,
    TOO_BIG,
    expire_time_error,
    failed,
    int_arg,
    now_ms,
    result_error,
    wrong_args,
)
from grid.frontends.resp.keyspace import (
    CONTAINS,
    GET,
    IF_ABSENT,
    IF_PRESENT,
    PUT,
    Current,
    delete_over,
    put_over,
    rmw,
)
from grid.frontends.resp.replies import OK, ONE, ZERO, bulk, error, integer
from grid.frontends.resp.table import ALL_KEYS, ONE_KEY, command
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

INT64_MAX = (1 << 63) - 1
EMPTY_BULK = b"$0\r\n\r\n"
OK_STATUS, NOT_FOUND, CAS_FAILED = pb.OK, pb.NOT_FOUND, pb.CAS_FAILED
NX, XX, GET_OLD, KEEPTTL, PERSIST = 1, 2, 4, 8, 16
EX, PX, EXAT, PXAT = 32, 64, 128, 256
EXPIRES = EX | PX | EXAT | PXAT
_UNIT_FLAGS = {b"ex": EX, b"px": PX, b"exat": EXAT, b"pxat": PXAT}


class Extended:
    """SET's or GETEX's options: flags, and the absolute expiry in ms (0: none) once
    `resolve` has checked the expiry argument (`expire`)."""

    __slots__ = ("at", "expire", "flags")

    def __init__(self, flags: int, at: int, expire: bytes | None = None) -> None:
        self.flags = flags
        self.at = at
        self.expire = expire

    def resolve(self, name: str) -> bytes | None:
        """Redis's getExpireMillisecondsOrReply: sets `at`, or answers the error."""
        if self.expire is None:
            return None
        ms = int_arg(self.expire)
        if ms is None:
            return NOT_INTEGER
        flags = self.flags
        seconds = bool(flags & (EX | EXAT))
        if ms <= 0 or (seconds and ms > INT64_MAX // 1000):
            return expire_time_error(name)
        if seconds:
            ms *= 1000
        if flags & (EX | PX):
            ms += now_ms()
        if ms > INT64_MAX:
            return expire_time_error(name)
        self.at = ms
        return None


def parse_extended(args: list[bytes], start: int, for_set: bool) -> Extended | bytes:
    """Redis's parseExtendedStringArgumentsOrReply (the expiry is checked by `resolve`:
    SET checks it before anything, GETEX only once it found the key)."""
    flags = 0
    expire: bytes | None = None
    j = start
    n = len(args)
    while j < n:
        opt = args[j].lower()
        has_next = j + 1 < n
        if opt == b"nx" and not flags & XX and for_set:
            flags |= NX
        elif opt == b"xx" and not flags & NX and for_set:
            flags |= XX
        elif opt == b"get" and for_set:
            flags |= GET_OLD
        elif opt == b"keepttl" and not flags & (PERSIST | EXPIRES) and for_set:
            flags |= KEEPTTL
        elif opt == b"persist" and not for_set and not flags & (EXPIRES | KEEPTTL):
            flags |= PERSIST
        elif opt in _UNIT_FLAGS and has_next:
            unit = _UNIT_FLAGS[opt]
            if flags & (KEEPTTL | PERSIST | (EXPIRES & ~unit)):
                return SYNTAX
            flags |= unit
            expire = args[j + 1]
            j += 1
        else:
            return SYNTAX
        j += 1
    return Extended(flags, 0, expire)


def _bulk_or_null(p: KeyPlan) -> bytes:
    status = p.status
    if status == OK_STATUS:
        v = p.value
        return b"$%d\r\n%b\r\n" % (len(v), v)
    if status == NOT_FOUND:
        return p.ctx.enc.null  # type: ignore[no-any-return]
    return result_error(p)


# ---- GET, SET -------------------------------------------------------------------------------
def get(c: RespConnection, args: list[bytes]) -> Reply:
    return KeyPlan(GET, args[1], b"", c, _bulk_or_null)


def _ok_or_null(p: KeyPlan) -> bytes:
    status = p.status
    if status == OK_STATUS:
        return OK
    if status == CAS_FAILED:
        return p.ctx.enc.null  # type: ignore[no-any-return]
    return result_error(p)


def set_(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) == 3:  # the plain SET, the one that matters for speed
        return KeyPlan(PUT, args[1], args[2], c, _ok_or_null)
    opts = parse_extended(args, 3, True)
    if isinstance(opts, bytes):
        return opts
    err = opts.resolve("set")
    if err is not None:
        return err
    return _set(c, args[1], args[2], opts)


def _set(c: RespConnection, key: bytes, value: bytes, opts: Extended) -> Reply:
    flags, m = opts.flags, c.map
    at = opts.at
    if not flags & (GET_OLD | KEEPTTL) and not (at and at <= now_ms()):
        condition = IF_ABSENT if flags & NX else IF_PRESENT if flags & XX else 0
        return KeyPlan(PUT, key, value, c, _ok_or_null, at, condition)

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        old = cur.value
        answer = c.enc.bulk_or_null(old) if flags & GET_OLD else OK
        if (flags & NX and old is not None) or (flags & XX and old is None):
            return [], answer if flags & GET_OLD else c.enc.null
        if at and at <= now_ms():  # already expired: the key goes
            return ([delete_over(m, key, cur)] if old is not None else []), answer
        keep = cur.expire_at if flags & KEEPTTL else 0
        return [put_over(m, key, cur, value, at or keep)], answer

    return rmw(c.runner, m, key, "set", step)


def setnx(c: RespConnection, args: list[bytes]) -> Reply:
    op = pb.Op(code=PUT, map=c.map, key=args[1], value=args[2], condition=IF_ABSENT)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if r.status == pb.OK:
            return ONE
        if r.status == pb.CAS_FAILED:
            return ZERO
        return result_error(r)

    return Plan([op], finish)


def _setex(c: RespConnection, args: list[bytes], unit: int, name: str) -> Reply:
    n = int_arg(args[2])
    if n is None:
        return NOT_INTEGER
    if n <= 0 or (unit == 1000 and n > INT64_MAX // 1000):
        return expire_time_error(name)
    at = n * unit + now_ms()
    if at > INT64_MAX:  # Redis: the sum wraps negative, "invalid expire time"
        return expire_time_error(name)
    return _set(c, args[1], args[3], Extended(0, at))


def setex(c: RespConnection, args: list[bytes]) -> Reply:
    return _setex(c, args, 1000, "setex")


def psetex(c: RespConnection, args: list[bytes]) -> Reply:
    return _setex(c, args, 1, "psetex")


def getset(c: RespConnection, args: list[bytes]) -> Reply:
    return _set(c, args[1], args[2], Extended(GET_OLD, 0))


def getdel(c: RespConnection, args: list[bytes]) -> Reply:
    m, key = c.map, args[1]

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        if cur.value is None:
            return [], c.enc.null
        return [delete_over(m, key, cur)], bulk(cur.value)

    return rmw(c.runner, m, key, "getdel", step)


def getex(c: RespConnection, args: list[bytes]) -> Reply:
    opts = parse_extended(args, 2, False)
    if isinstance(opts, bytes):
        return opts
    if not opts.flags:
        return get(c, args)
    m, key = c.map, args[1]

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        if cur.value is None:
            return [], c.enc.null
        err = opts.resolve("getex")
        if err is not None:
            return [], err
        answer = bulk(cur.value)
        if opts.flags & PERSIST:
            if not cur.expire_at:
                return [], answer
            return [put_over(m, key, cur, cur.value, 0)], answer
        if opts.at <= now_ms():
            return [delete_over(m, key, cur)], answer
        return [put_over(m, key, cur, cur.value, opts.at)], answer

    return rmw(c.runner, m, key, "getex", step)


# ---- many keys ------------------------------------------------------------------------------
def mget(c: RespConnection, args: list[bytes]) -> Reply:
    m = c.map
    ops = [pb.Op(code=GET, map=m, key=k) for k in args[1:]]

    def finish(rs: Sequence[pb.Result]) -> bytes:
        null = c.enc.null
        parts = [b"*%d\r\n" % len(rs)]
        for r in rs:
            if r.status == pb.OK:
                parts.append(b"$%d\r\n%b\r\n" % (len(r.value), r.value))
            elif r.status == pb.NOT_FOUND:
                parts.append(null)
            else:
                return result_error(r)
        return b"".join(parts)

    if len(ops) > c.runner.max_ops:
        return _call(c, ops, finish)
    return Plan(ops, finish)


async def _call(c: RespConnection, ops: list[pb.Op], finish: object) -> bytes:
    results = await c.runner.call(ops)
    return finish(results)  # type: ignore[operator,no-any-return]


def _first_error(rs: Sequence[pb.Result]) -> bytes | None:
    for r in rs:
        if failed(r):
            return result_error(r)
    return None


def mset(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) % 2 == 0:
        return wrong_args("mset")
    m = c.map
    ops = [pb.Op(code=PUT, map=m, key=args[i], value=args[i + 1]) for i in range(1, len(args), 2)]

    def finish(rs: Sequence[pb.Result]) -> bytes:
        return _first_error(rs) or OK

    if len(ops) > c.runner.max_ops:
        return _call(c, ops, finish)
    return Plan(ops, finish)


def msetnx(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) % 2 == 0:
        return wrong_args("msetnx")
    return _msetnx(c, args)


async def _msetnx(c: RespConnection, args: list[bytes]) -> bytes:
    m = c.map
    pairs = {args[i]: args[i + 1] for i in range(1, len(args), 2)}  # the last value wins
    found = await c.runner.call([pb.Op(code=CONTAINS, map=m, key=k) for k in pairs])
    if err := _first_error(found):
        return err
    if any(r.count for r in found):
        return ZERO
    ops = [pb.Op(code=PUT, map=m, key=k, value=v, condition=IF_ABSENT) for k, v in pairs.items()]
    written = await c.runner.call(ops)
    if all(r.status == pb.OK for r in written):
        return ONE
    undo = [
        delete_over(m, op.key, Current(op.value, (r.version_ts, r.version_member), 0))
        for op, r in zip(ops, written, strict=True)
        if r.status == pb.OK
    ]
    await c.runner.call(undo)
    lost = [r for r in written if r.status not in (pb.OK, pb.CAS_FAILED)]
    return result_error(lost[0]) if lost else ZERO


# ---- parts of a string ----------------------------------------------------------------------
def strlen(c: RespConnection, args: list[bytes]) -> Reply:
    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if failed(r):
            return result_error(r)
        return integer(len(r.value))

    return Plan([pb.Op(code=GET, map=c.map, key=args[1])], finish)


def getrange(c: RespConnection, args: list[bytes]) -> Reply:
    start, end = int_arg(args[2]), int_arg(args[3])
    if start is None or end is None:
        return NOT_INTEGER

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if failed(r):
            return result_error(r)
        value = r.value
        n = len(value)
        s, e = start, end
        if s < 0 and e < 0 and s > e:
            return EMPTY_BULK
        if s < 0:
            s += n
        if e < 0:
            e += n
        s, e = max(s, 0), max(e, 0)
        if e >= n:
            e = n - 1
        if s > e or n == 0:
            return EMPTY_BULK
        return bulk(value[s : e + 1])

    return Plan([pb.Op(code=GET, map=c.map, key=args[1])], finish)


def setrange(c: RespConnection, args: list[bytes]) -> Reply:
    offset = int_arg(args[2])
    if offset is None:
        return NOT_INTEGER
    if offset < 0:
        return error("ERR offset is out of range")
    m, key, part = c.map, args[1], args[3]
    limit = c.config.max_value_bytes

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        old = cur.value
        if not part:
            return [], integer(0 if old is None else len(old))
        if offset + len(part) > limit:
            return [], TOO_BIG
        base = old or b""
        if len(base) < offset:
            base += bytes(offset - len(base))
        new = base[:offset] + part + base[offset + len(part) :]
        return [put_over(m, key, cur, new, cur.expire_at)], integer(len(new))

    return rmw(c.runner, m, key, "setrange", step)


def append(c: RespConnection, args: list[bytes]) -> Reply:
    m, key, part = c.map, args[1], args[2]
    limit = c.config.max_value_bytes

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        new = (cur.value or b"") + part
        if len(new) > limit:
            return [], TOO_BIG
        return [put_over(m, key, cur, new, cur.expire_at)], integer(len(new))

    return rmw(c.runner, m, key, "append", step)


_W = "write denyoom"
COMMANDS = [
    command("get", 2, "readonly fast", ONE_KEY, "string", get),
    command("set", -3, _W, ONE_KEY, "string", set_),
    command("setnx", 3, _W + " fast", ONE_KEY, "string", setnx),
    command("setex", 4, _W, ONE_KEY, "string", setex),
    command("psetex", 4, _W, ONE_KEY, "string", psetex),
    command("getset", 3, _W + " fast", ONE_KEY, "string", getset),
    command("getdel", 2, "write fast", ONE_KEY, "string", getdel),
    command("getex", -2, "write fast", ONE_KEY, "string", getex),
    command("mget", -2, "readonly fast", ALL_KEYS, "string", mget),
    command("mset", -3, _W, (1, -1, 2), "string", mset),
    command("msetnx", -3, _W, (1, -1, 2), "string", msetnx),
    command("strlen", 2, "readonly fast", ONE_KEY, "string", strlen),
    command("getrange", 4, "readonly", ONE_KEY, "string", getrange),
    command("substr", 4, "readonly", ONE_KEY, "string", getrange),
    command("setrange", 4, _W, ONE_KEY, "string", setrange),
    command("append", 3, _W + " fast", ONE_KEY, "string", append),
]
