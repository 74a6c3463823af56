"""The meta commands: mg, ms, md, ma, mn, me (protocol.txt, "Meta Commands").

A meta command is a key and flags: one character each, some with a token after it
(`T30`, `Oabc`). Flags that ask for data are answered in the order they were sent;
on a miss only `k` and `O` are echoed, as memcached 1.6.18 does. Supported:

- mg: v f t c k s q O T (touch) N (vivify) R (recache) u (accepted; grid has no LRU
  to bump). Stale-while-revalidate as memcached does it: an item's state bits
  (items.py) say whether it is stale (X) and whether a client was told it won the
  right to recache it; the first reader of a stale item, of a vivified stub's miss, or
  of an item whose TTL is below R, wins (W), and is made so by a write on the version
  it read (one winner among racing readers); the readers after it get Z.
- ms: F T C M(E A P R S) q O k c S (ignored, as memcached ignores it) I (with C: an
  older CAS still stores, marked stale).
- md: C q O k I (invalidate: mark stale instead of deleting; T then sets the TTL).
- ma: N J D T M(I + D -) q O k t c v.
- mn; me answers memcached's fields from what grid knows (exp, cas, size; la=0,
  fetch=no, cls=1).

All four take b: the key is sent in base64 and may hold any byte (a `k` answer is
the key as sent, then " b"). Not supported, refused with "CLIENT_ERROR invalid
flag": h, l (hit and last-access tracking: a write on every read), E (explicit CAS,
which memcached 1.6.18 refuses too). The single-operation cases (mg, ms in set/add/replace modes, md
without C) are one grid operation; the others read the item first (keyspace.rmw).
"""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from grid.frontends.memcached import replies as R
from grid.frontends.memcached.commands.arith import apply, counter, render
from grid.frontends.memcached.grammar import KEY_MAX, key_ok, meta_length, number, unsigned
from grid.frontends.memcached.items import STALE, TOKEN_SENT, pack, unpack, unpack_state
from grid.frontends.memcached.keyspace import (
    EXPIRED,
    Item,
    delete_over,
    expire_at,
    now_ms,
    rmw,
    ttl_seconds,
    write_over,
)
from grid.frontends.memcached.parser import BAD_CHUNK, TOO_LARGE, Request
from grid.frontends.ops import Plan, Reply
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection

Flags = dict[str, bytes]
"""A meta command's flags, in the order sent (dicts keep it): character -> token."""
OPAQUE_MAX = 32
INVALID = b"CLIENT_ERROR invalid flag\r\n"
DUPLICATE = b"CLIENT_ERROR duplicate flag\r\n"
EITHER = b"CLIENT_ERROR invalid or duplicate flag\r\n"
BAD_TOKEN = b"CLIENT_ERROR bad token in command line format\r\n"
MG_FLAGS = "bvftcksqOTNRu"
MS_FLAGS = "bFTCMqOkcSI"
MD_FLAGS = "bCqOkIT"
MA_FLAGS = "bNJDTMqOktcv"
MN = b"MN\r\n"
EN = b"EN\r\n"


def parse_flags(tokens: Sequence[bytes], allowed: str, either: bool = False) -> Flags | bytes:
    """The flags, or the error line memcached answers for them (md and ma answer both
    kinds of error with one text: `either`)."""
    flags: Flags = {}
    for t in tokens:
        f = chr(t[0])
        if f not in allowed or f in flags:
            if either:
                return EITHER
            return INVALID if f not in allowed else DUPLICATE
        if f == "O" and len(t) - 1 > OPAQUE_MAX:
            return b"CLIENT_ERROR opaque token too long\r\n"
        flags[f] = t[1:]
    return flags


def _echo(flags: Flags) -> bytes:
    """The k and O flags, as a miss or a write answers them."""
    out = b""
    for f, tok in flags.items():
        if f == "k":
            out += b" k" + tok
        elif f == "O":
            out += b" O" + tok
    return out


def _exptime(tok: bytes) -> int | None:
    n = number(tok)
    return None if n is None else expire_at(n)


def _check(args: list[bytes], allowed: str, either: bool = False) -> tuple[bytes, Flags] | bytes:
    """The key and flags of mg, md or ma, or the error line."""
    if len(args) < 2:
        return R.ERROR
    if len(args[1]) > KEY_MAX:
        return R.BAD_FORMAT
    flags = parse_flags(args[2:], allowed, either)
    if isinstance(flags, bytes):
        return flags
    return _key(args[1], flags)


def _key(token: bytes, flags: Flags) -> tuple[bytes, Flags] | bytes:
    """The key a command names (with `b`, its token is base64: the key may hold any
    byte), and the flags with what `k` answers put in as k's token: the key as sent,
    and " b" after it when it was base64, as memcached 1.6.18 answers it."""
    if "b" in flags:
        try:
            key = binascii.a2b_base64(token, strict_mode=True)
        except binascii.Error:
            return b"CLIENT_ERROR error decoding key\r\n"
        if not 0 < len(key) <= KEY_MAX:
            return R.BAD_FORMAT
    else:
        key = token
        if not key_ok(key):
            return R.BAD_FORMAT
    if "k" in flags:
        flags["k"] = token + b" b" if "b" in flags else token
    return key, flags


# ---- mg -------------------------------------------------------------------------------------
def _hit(flags: Flags, r: pb.Result, won: bool = False) -> bytes:
    """A hit's answer: the flags asked for, in their order, then memcached's Z (another
    client won the recache), X (stale) and W (this one won), in that order."""
    item_flags, value, state = unpack_state(r.value)
    parts = []
    for f, tok in flags.items():
        if f == "f":
            parts.append(b"f%d" % item_flags)
        elif f == "t":
            parts.append(b"t%d" % ttl_seconds(r))
        elif f == "c":
            parts.append(b"c%d" % r.version_ts)
        elif f == "k":
            parts.append(b"k" + tok)
        elif f == "s":
            parts.append(b"s%d" % len(value))
        elif f == "O":
            parts.append(b"O" + tok)
    if state & TOKEN_SENT and not won:
        parts.append(b"Z")
    if state & STALE:
        parts.append(b"X")
    if won:
        parts.append(b"W")
    tail = b"".join(b" " + p for p in parts)
    if "v" in flags:
        return b"VA %d%b\r\n%b\r\n" % (len(value), tail, value)
    return b"HD%b\r\n" % tail


def _wins(r: pb.Result, recache: int | None) -> bool:
    """Whether this read wins the right to recache: the item is stale, or its TTL is below
    the R token, and no client was told so before."""
    _, _, state = unpack_state(r.value)
    if state & TOKEN_SENT:
        return False
    if state & STALE:
        return True
    return recache is not None and r.expire_at_ms != 0 and ttl_seconds(r) < recache


async def _claim(
    c: MemcachedConnection, key: bytes, flags: Flags, r: pb.Result, recache: int | None
) -> bytes:
    """Mark the item TOKEN_SENT, on the version read (another reader may be claiming it
    too: one write wins, the other reads again and answers Z); then answer W."""
    for _ in range(3):
        item = Item.of(r)
        assert item.value is not None
        op = write_over(c.map, key, item, item.flags, item.value, item.expire_at,
                        item.state | TOKEN_SENT)  # fmt: skip
        (w,) = await c.runner.call([op])
        if w.status == pb.OK:
            won = pb.Result(status=pb.OK, value=op.value, version_ts=w.version_ts,
                            expire_at_ms=item.expire_at)  # fmt: skip
            return _hit(flags, won, won=True)
        if w.status != pb.CAS_FAILED:
            return R.result_error(w)
        (r,) = await c.runner.call([pb.Op(code=pb.GET, map=c.map, key=key)])
        if r.status != pb.OK:
            return R.result_error(r) if R.failed(r) else b"" if "q" in flags else EN
        if not _wins(r, recache):
            return _hit(flags, r)
    return _hit(flags, r)


def mg(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    checked = _check(args, MG_FLAGS)
    if isinstance(checked, bytes):
        return checked
    key, flags = checked
    m, stats = c.map, c.stats
    ops = []
    if "T" in flags:
        at = _exptime(flags["T"])
        if at is None:
            return BAD_TOKEN
        if at == EXPIRED:
            ops.append(pb.Op(code=pb.DELETE, map=m, key=key))
        else:
            ops.append(pb.Op(code=pb.EXPIRE, map=m, key=key, expire_at_ms=at))
        stats.cmd_touch += 1
    vivify = None
    if "N" in flags:
        vivify = _exptime(flags["N"])
        if vivify is None:
            return BAD_TOKEN
    recache = None
    if "R" in flags:
        recache = number(flags["R"])
        if recache is None:
            return BAD_TOKEN
    ops.append(pb.Op(code=pb.GET, map=m, key=key))
    stats.cmd_get += 1

    def finish(rs: Sequence[pb.Result]) -> bytes | Awaitable[bytes]:
        r = rs[-1]
        if r.status == pb.OK:
            stats.get_hits += 1
            if _wins(r, recache):
                return _claim(c, key, flags, r, recache)
            return _hit(flags, r)
        if R.failed(r):
            return R.result_error(r)
        stats.get_misses += 1
        return b"" if "q" in flags else b"EN%b\r\n" % _echo(flags)

    if vivify is None:
        return Plan(ops, finish)
    return _vivify(c, key, flags, ops, vivify, finish)


async def _vivify(
    c: MemcachedConnection, key: bytes, flags: Flags, ops: list[pb.Op], at: int, finish: object
) -> bytes:
    """mg with N: a miss creates an empty stub item, and its creator wins (W)."""
    m = c.map
    for _ in range(2):
        rs = await c.runner.call(ops)
        if rs[-1].status != pb.NOT_FOUND:
            return await _answer(finish(rs))  # type: ignore[operator]
        put = pb.Op(code=pb.PUT, map=m, key=key, value=pack(0, b"", TOKEN_SENT),
                    condition=pb.IF_ABSENT, expire_at_ms=0 if at == EXPIRED else at)  # fmt: skip
        w = (await c.runner.call([put]))[0]
        if w.status == pb.OK:
            c.stats.get_misses += 1
            made = pb.Result(status=pb.OK, value=put.value, version_ts=w.version_ts,
                             expire_at_ms=put.expire_at_ms)  # fmt: skip
            return _hit(flags, made, won=True)
        if R.failed(w):
            return R.result_error(w)
    return await _answer(finish(rs))  # type: ignore[operator]


async def _answer(reply: bytes | Awaitable[bytes]) -> bytes:
    return reply if isinstance(reply, bytes) else await reply


# ---- ms -------------------------------------------------------------------------------------
MODES = {b"S": "set", b"E": "add", b"R": "replace", b"A": "append", b"P": "prepend"}


def _stored(code: bytes, flags: Flags, cas: int | None = None) -> bytes:
    if code == b"HD" and "q" in flags:
        return b""
    parts = []
    for f, tok in flags.items():
        if f == "c":
            parts.append(b"c%d" % (cas or 0))
        elif f == "k":
            parts.append(b"k" + tok)
        elif f == "O":
            parts.append(b"O" + tok)
    return code + b"".join(b" " + p for p in parts) + b"\r\n"


def ms(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if meta_length(args) is None:  # no data block followed (grammar.py)
        return R.BAD_FORMAT
    key = args[1]
    if req.problem == TOO_LARGE:  # memcached drops the old value, whatever the mode
        return Plan([pb.Op(code=pb.DELETE, map=c.map, key=key)], lambda rs: R.TOO_LARGE)
    if req.problem == BAD_CHUNK:
        return R.BAD_CHUNK
    parsed = parse_flags(args[3:], MS_FLAGS)
    if isinstance(parsed, bytes):
        return parsed
    checked = _key(key, parsed)
    if isinstance(checked, bytes):
        return checked
    key, flags = checked
    mode = MODES.get(flags.get("M", b"S"))
    if mode is None:
        return b"CLIENT_ERROR invalid mode for ms M token\r\n"
    item_flags = unsigned(flags["F"]) if "F" in flags else 0
    if item_flags is None:
        return R.BAD_FORMAT
    item_flags &= 0xFFFFFFFF  # (wraps, as the text commands' flags do)
    at = _exptime(flags["T"]) if "T" in flags else 0
    compare = unsigned(flags["C"]) if "C" in flags else None
    if at is None or ("C" in flags and compare is None):
        return BAD_TOKEN
    assert req.data is not None
    value, m = req.data, c.map
    c.stats.cmd_set += 1
    if compare is None and mode in ("set", "add", "replace") and at != EXPIRED:
        condition = {"set": 0, "add": pb.IF_ABSENT, "replace": pb.IF_PRESENT}[mode]
        op = pb.Op(code=pb.PUT, map=m, key=key, value=pack(item_flags, value), expire_at_ms=at,
                   condition=condition)  # fmt: skip

        def finish(rs: Sequence[pb.Result]) -> bytes:
            r = rs[0]
            if r.status == pb.OK:
                c.stats.total_items += 1
                return _stored(b"HD", flags, r.version_ts)
            if r.status == pb.CAS_FAILED:
                return _stored(b"NS", flags)
            return R.result_error(r)

        return Plan([op], finish)
    return _ms_rmw(c, key, flags, mode, item_flags, value, at, compare)


async def _ms_rmw(
    c: MemcachedConnection, key: bytes, flags: Flags, mode: str, item_flags: int, value: bytes,
    at: int, compare: int | None,
) -> bytes:  # fmt: skip
    m = c.map

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        # as memcached 1.6.18 answers a miss: append and prepend say NS even with a
        # CAS; set and replace with a CAS are a `cas` (NF)
        if item.value is None:
            if mode in ("append", "prepend"):
                return [], _stored(b"NS", flags)
            if compare is not None and mode in ("set", "replace"):
                return [], _stored(b"NF", flags)
            if mode == "replace":
                return [], _stored(b"NS", flags)
        elif mode == "add":
            return [], _stored(b"NS", flags)
        elif compare is not None and item.cas != compare:
            if "I" in flags and compare < item.cas and mode in ("set", "replace"):
                # invalidate: an older CAS still stores, marked stale (mg answers X)
                return [write_over(m, key, item, item_flags, value, at, STALE)], b""
            return [], _stored(b"EX", flags)
        if mode in ("append", "prepend"):
            assert item.value is not None
            new = item.value + value if mode == "append" else value + item.value
            if len(new) > c.max_item:
                return [], R.NO_MEMORY
            return [write_over(m, key, item, item.flags, new, item.expire_at)], b""
        if at == EXPIRED:
            return ([delete_over(m, key, item)] if item.value is not None else []), _stored(
                b"HD", flags
            )
        return [write_over(m, key, item, item_flags, value, at)], b""

    def done(rs: Sequence[pb.Result]) -> bytes:
        c.stats.total_items += 1
        return _stored(b"HD", flags, rs[0].version_ts)

    lost = _stored(b"EX", flags) if compare is not None else b""
    return await rmw(c.runner, m, key, step, retry=compare is None, lost=lost, done=done)


# ---- md -------------------------------------------------------------------------------------
def md(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    checked = _check(args, MD_FLAGS, either=True)
    if isinstance(checked, bytes):
        return checked
    key, flags = checked
    m, stats = c.map, c.stats
    if "I" in flags:
        return _invalidate(c, key, flags)
    if "C" not in flags:  # (T without I is ignored, as memcached ignores it)

        def finish(rs: Sequence[pb.Result]) -> bytes:
            r = rs[0]
            if R.failed(r):
                return R.result_error(r)
            if r.count:
                stats.delete_hits += 1
                return _stored(b"HD", flags)
            stats.delete_misses += 1
            return _stored(b"NF", flags)

        return Plan([pb.Op(code=pb.DELETE, map=m, key=key)], finish)
    compare = unsigned(flags["C"])
    if compare is None:
        return EITHER

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        if item.value is None:
            return [], _stored(b"NF", flags)
        if item.cas != compare:
            return [], _stored(b"EX", flags)
        return [delete_over(m, key, item)], _stored(b"HD", flags)

    return rmw(c.runner, m, key, step, retry=False, lost=_stored(b"EX", flags))


def _invalidate(c: MemcachedConnection, key: bytes, flags: Flags) -> Reply:
    """md with I: keep the item, marked stale, with a new CAS and no win token given, so
    the next mg answers X W and the ones after Z X; T sets its TTL meanwhile."""
    compare = unsigned(flags["C"]) if "C" in flags else None
    at = _exptime(flags["T"]) if "T" in flags else None
    if ("C" in flags and compare is None) or ("T" in flags and at is None):
        return EITHER  # md answers a bad token as a bad flag, as memcached 1.6.18 does
    m = c.map

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        if item.value is None:
            return [], _stored(b"NF", flags)
        if compare is not None and item.cas != compare:
            return [], _stored(b"EX", flags)
        if at == EXPIRED:
            return [delete_over(m, key, item)], _stored(b"HD", flags)
        when = item.expire_at if at is None else at
        return [write_over(m, key, item, item.flags, item.value, when, STALE)], _stored(
            b"HD", flags
        )

    return rmw(c.runner, m, key, step, retry=compare is None, lost=_stored(b"EX", flags))


# ---- ma -------------------------------------------------------------------------------------
def ma(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    checked = _check(args, MA_FLAGS, either=True)
    if isinstance(checked, bytes):
        return checked
    key, flags = checked
    bad = EITHER
    delta = unsigned(flags["D"]) if "D" in flags else 1
    initial = unsigned(flags["J"]) if "J" in flags else 0
    compare = unsigned(flags["C"]) if "C" in flags else None
    create = _exptime(flags["N"]) if "N" in flags else None
    at = _exptime(flags["T"]) if "T" in flags else None
    if delta is None or initial is None or ("C" in flags and compare is None):
        return bad
    if ("N" in flags and create is None) or ("T" in flags and at is None):
        return bad
    mode = flags.get("M", b"I")
    if mode not in (b"I", b"+", b"D", b"-"):
        return b"CLIENT_ERROR invalid mode for ma M token\r\n"
    incr = mode in (b"I", b"+")
    m, stats = c.map, c.stats
    result: list[tuple[int, int]] = []  # (number, expire_at) written

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        result.clear()
        if item.value is None:
            if create is None:
                if incr:
                    stats.incr_misses += 1
                else:
                    stats.decr_misses += 1
                return [], _stored(b"NF", flags)
            when = 0 if create == EXPIRED else create
            result.append((initial, when))
            return [write_over(m, key, item, 0, b"%d" % initial, when)], b""
        if compare is not None and item.cas != compare:
            return [], _stored(b"EX", flags)
        current = counter(item.value)
        if current is None:
            return [], R.NON_NUMERIC
        n = apply(current, delta, incr)
        if incr:
            stats.incr_hits += 1
        else:
            stats.decr_hits += 1
        when = item.expire_at if at is None else (0 if at == EXPIRED else at)
        result.append((n, when))
        new = render(n, item.value)  # in place, as memcached: a stale item stays stale
        return [write_over(m, key, item, item.flags, new, when, item.state)], b""

    def done(rs: Sequence[pb.Result]) -> bytes:
        n, when = result[0]
        parts = []
        for f, tok in flags.items():
            if f == "t":
                left = -1 if not when else max(0, (when - now_ms() + 999) // 1000)
                parts.append(b"t%d" % left)
            elif f == "c":
                parts.append(b"c%d" % rs[0].version_ts)
            elif f == "k":
                parts.append(b"k" + tok)
            elif f == "O":
                parts.append(b"O" + tok)
        tail = b"".join(b" " + p for p in parts)
        if "v" in flags:
            text = b"%d" % n
            return b"VA %d%b\r\n%b\r\n" % (len(text), tail, text)
        return b"" if "q" in flags else b"HD%b\r\n" % tail

    lost = _stored(b"EX", flags)
    return rmw(c.runner, m, key, step, retry=compare is None, lost=lost, done=done)


# ---- mn, me ---------------------------------------------------------------------------------
def mn(c: MemcachedConnection, req: Request) -> Reply:
    return MN


def me(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if len(args) < 2 or len(args[1]) > KEY_MAX or not key_ok(args[1]):
        return R.BAD_FORMAT
    key = args[1]

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if r.status == pb.NOT_FOUND:
            return EN
        if R.failed(r):
            return R.result_error(r)
        _, value = unpack(r.value)
        return b"ME %b exp=%d la=0 cas=%d fetch=no cls=1 size=%d\r\n" % (
            key, ttl_seconds(r), r.version_ts, len(key) + len(value) + 48)  # fmt: skip

    return Plan([pb.Op(code=pb.GET, map=c.map, key=key)], finish)


COMMANDS = {b"mg": mg, b"ms": ms, b"md": md, b"ma": ma, b"mn": mn, b"me": me}
