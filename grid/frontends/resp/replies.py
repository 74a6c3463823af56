"""RESP replies, as bytes, in the protocol a connection speaks (2 until HELLO 3).

RESP3 adds types that RESP2 writes with the ones it has: a null is `$-1`/`*-1`
in RESP2 and `_` in RESP3, a map is a flat array of keys and values in RESP2, a
double is a bulk string, a set an array, a boolean an integer. Commands build
their reply with an `Encoder` for the connection's protocol, so each command
says what it answers once and both protocols get Redis's wire form.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
EMPTY_ARRAY = b"*0\r\n"
_INTS = [b":%d\r\n" % i for i in range(-1, 1025)]


def error(message: str) -> bytes:
    """An error reply; `message` starts with its code (ERR, WRONGTYPE, ...). Newlines in it
    would break the stream, so they become spaces (as Redis does)."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def error_bytes(message: bytes) -> bytes:
    """`error` for a message holding raw bytes of the request (Redis writes them as is)."""
    return b"-" + message.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def integer(n: int) -> bytes:
    if -1 <= n <= 1023:
        return _INTS[n + 1]
    return b":%d\r\n" % n


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def bulks(items: Sequence[bytes]) -> bytes:
    """An array of bulk strings (no nulls): KEYS, SCAN's keys."""
    parts = [b"*%d\r\n" % len(items)]
    for b in items:
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


def format_double(x: float) -> bytes:
    """A double as Redis writes one (%.17g, inf / -inf / nan spelled out)."""
    if math.isinf(x):
        return b"inf" if x > 0 else b"-inf"
    if math.isnan(x):
        return b"nan"
    return b"%.17g" % x


class Encoder:
    """Replies in RESP2; `Resp3Encoder` overrides what RESP3 writes otherwise."""

    protocol = 2
    null = b"$-1\r\n"
    null_array = b"*-1\r\n"

    def array(self, items: Sequence[bytes]) -> bytes:
        """An array of already encoded replies."""
        return b"*%d\r\n" % len(items) + b"".join(items)

    def push(self, items: Sequence[bytes]) -> bytes:
        """Out-of-band data (pub/sub): an array in RESP2."""
        return self.array(items)

    def bulk_or_null(self, data: bytes | None) -> bytes:
        return self.null if data is None else b"$%d\r\n%b\r\n" % (len(data), data)

    def map(self, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
        """A map of already encoded keys and values (RESP2: a flat array)."""
        return b"*%d\r\n" % (2 * len(pairs)) + b"".join(k + v for k, v in pairs)

    def set(self, items: Sequence[bytes]) -> bytes:
        return self.array(items)

    def double(self, x: float) -> bytes:
        return bulk(format_double(x))

    def boolean(self, b: bool) -> bytes:
        return ONE if b else ZERO

    def verbatim(self, text: bytes) -> bytes:
        """Text meant for a human (INFO, CLIENT INFO): a bulk string in RESP2."""
        return bulk(text)

    def value(self, v: object) -> bytes:
        """A plain Python value (nested lists, dicts, str, bytes, int, float, None)."""
        if v is None:
            return self.null
        if isinstance(v, bool):
            return self.boolean(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, float):
            return self.double(v)
        if isinstance(v, str):
            return bulk(v.encode())
        if isinstance(v, bytes):
            return bulk(v)
        if isinstance(v, dict):
            return self.map([(self.value(k), self.value(x)) for k, x in v.items()])
        if isinstance(v, (list, tuple)):
            return self.array([self.value(x) for x in v])
        raise TypeError(f"no RESP form for {type(v).__name__}")

    def values(self, items: Iterable[object]) -> bytes:
        return self.array([self.value(x) for x in items])


class Resp3Encoder(Encoder):
    protocol = 3
    null = b"_\r\n"
    null_array = b"_\r\n"

    def map(self, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
        return b"%%%d\r\n" % len(pairs) + b"".join(k + v for k, v in pairs)

    def set(self, items: Sequence[bytes]) -> bytes:
        return b"~%d\r\n" % len(items) + b"".join(items)

    def push(self, items: Sequence[bytes]) -> bytes:
        return b">%d\r\n" % len(items) + b"".join(items)

    def double(self, x: float) -> bytes:
        return b"," + format_double(x) + b"\r\n"

    def boolean(self, b: bool) -> bytes:
        return b"#t\r\n" if b else b"#f\r\n"

    def verbatim(self, text: bytes) -> bytes:
        return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)


RESP2 = Encoder()
RESP3 = Resp3Encoder()
