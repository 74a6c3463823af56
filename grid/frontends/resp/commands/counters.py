"""Counters: INCR, INCRBY, DECR, DECRBY (one atomic grid INCR each) and INCRBYFLOAT.

A RESP counter is stored as Redis stores it, a decimal string (b"11"), not as the
SDK's msgpack integer: grid's INCR op carries `decimal` for this, so the increment
is still one atomic operation on the key's primary, and a GET or an SET in
between sees and writes plain text (grid/frontends/resp/keyspace.py says more).
The parse is Redis's string2ll (no spaces, no '+', no leading zeros), so
"value is not an integer or out of range" comes in the same cases.

INCRBYFLOAT is a compare-and-set loop. Redis computes it in a C long double and
prints it with 17 decimals, trailing zeros cut, so its digits show the long double's
rounding (123.456 + 7.1 is 130.55600000000000001); grid takes the sum in the C
library's long double too (grid/frontends/resp/longdouble.py) and prints it the same
way. Where that library cannot be loaded, the sum is taken exactly in decimal and
printed the same way: equal for small decimal numbers (10.5 + 0.1 = 10.6), different
from Redis in the last digits of most others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation, localcontext
from typing import TYPE_CHECKING, Any

from grid.frontends.ops import Plan, Reply
from grid.frontends.resp import longdouble
from grid.frontends.resp.common import NOT_FLOAT, NOT_INTEGER, int_arg, result_error
from grid.frontends.resp.keyspace import INCR, Current, put_over, rmw
from grid.frontends.resp.replies import bulk, error, integer
from grid.frontends.resp.table import ONE_KEY, command
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

INT64_MIN = -(1 << 63)
_DECIMAL = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_HEX = re.compile(rb"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?\Z")
_INF = re.compile(rb"[+-]?(?:inf|infinity)\Z", re.IGNORECASE)
LDBL_MAX = Decimal("1.18973149535723176502e4932")
LDBL_MIN = Decimal("3.6e-4951")


def _incr(c: RespConnection, key: bytes, delta: int) -> Reply:
    op = pb.Op(code=INCR, map=c.map, key=key, delta=delta, decimal=True)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        return integer(r.count) if r.status == pb.OK else result_error(r)

    return Plan([op], finish)


def incr(c: RespConnection, args: list[bytes]) -> Reply:
    return _incr(c, args[1], 1)


def decr(c: RespConnection, args: list[bytes]) -> Reply:
    return _incr(c, args[1], -1)


def incrby(c: RespConnection, args: list[bytes]) -> Reply:
    n = int_arg(args[2])
    return NOT_INTEGER if n is None else _incr(c, args[1], n)


def decrby(c: RespConnection, args: list[bytes]) -> Reply:
    n = int_arg(args[2])
    if n is None:
        return NOT_INTEGER
    if n == INT64_MIN:
        return error("ERR decrement would overflow")
    return _incr(c, args[1], -n)


def parse_long_double(s: bytes) -> Decimal | None:
    """A number as Redis's string2ld accepts it (strtold, the whole string, no leading
    blank, no NaN, in long double range), or None."""
    if not s or len(s) >= 5 * 1024:
        return None
    try:
        if _DECIMAL.match(s):
            value = Decimal(s.decode())
        elif _HEX.match(s):
            value = Decimal(float.fromhex(s.decode()))
        elif _INF.match(s):
            return Decimal("-Infinity") if s.startswith(b"-") else Decimal("Infinity")
        else:
            return None
    except (InvalidOperation, ValueError, OverflowError):
        return None
    if value and not LDBL_MIN <= abs(value) <= LDBL_MAX:
        return None  # strtold's ERANGE
    return value


def format_long_double(value: Decimal) -> bytes:
    """Redis's ld2string(LD_STR_HUMAN): 17 decimals, trailing zeros and point cut."""
    with localcontext() as ctx:
        ctx.prec = 5000
        text = f"{value.quantize(Decimal(1).scaleb(-17)):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()


def _decimal_sum(a: Decimal, b: Decimal) -> Decimal | None:
    """The exact sum, or None where a long double would be NaN or infinite."""
    with localcontext() as ctx:
        ctx.prec = 5000
        total = a + b
    return total if total.is_finite() and abs(total) <= LDBL_MAX else None


def _long_double_sum(a: longdouble.LongDouble, b: longdouble.LongDouble) -> Any:
    total = longdouble.add(a, b)
    return total if longdouble.finite(total) else None


# (parse, zero, sum or None if not finite, print): the C library's long double where it
# loads, exact decimal elsewhere (the module docstring says how they differ)
_ARITH: tuple[Callable[[bytes], Any], Any, Callable[[Any, Any], Any], Callable[[Any], bytes]] = (
    (longdouble.parse, longdouble.LongDouble(0), _long_double_sum, longdouble.human)
    if longdouble.AVAILABLE
    else (parse_long_double, Decimal(0), _decimal_sum, format_long_double)
)


def incrbyfloat(c: RespConnection, args: list[bytes]) -> Reply:
    parse, zero, add, show = _ARITH
    by = parse(args[2])
    m, key = c.map, args[1]

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        value = zero if cur.value is None else parse(cur.value)
        if value is None or by is None:
            return [], NOT_FLOAT
        total = add(value, by)
        if total is None:
            return [], error("ERR increment would produce NaN or Infinity")
        text = show(total)
        return [put_over(m, key, cur, text, cur.expire_at)], bulk(text)

    return rmw(c.runner, m, key, "incrbyfloat", step)


_W = "write denyoom fast"
COMMANDS = [
    command("incr", 2, _W, ONE_KEY, "string", incr),
    command("decr", 2, _W, ONE_KEY, "string", decr),
    command("incrby", 3, _W, ONE_KEY, "string", incrby),
    command("decrby", 3, _W, ONE_KEY, "string", decrby),
    command("incrbyfloat", 3, _W, ONE_KEY, "string", incrbyfloat),
]
